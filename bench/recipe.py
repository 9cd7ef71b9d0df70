"""Quality per compute: FD of training-recipe variants after a fixed budget of one core, one change at a time.

The budget is given in core-minutes and turned into optimizer steps honestly: one process first measures every
variant's training speed (images/s, one thread) in interleaved rounds, so machine load hits all alike, and each
variant gets the steps it makes in B minutes at that speed (variants of equal network and batch get equal steps).
A later call with a new network or batch probes it beside the baseline and scales its speed by the baseline's
ratio of the first probe to this one.
Each variant then trains for its steps (one thread) and is scored by `difflab eval` (FD against the Fashion-MNIST
test set, n samples, seed 0, DPM++ 2M at 20 steps on the trailing grid; EDM models on their Karras grid).

    OMP_NUM_THREADS=1 python bench/recipe.py --budget 10 --variants baseline,warmup50,lr1e-3,lr2e-3,cosine1e-3
    OMP_NUM_THREADS=1 python bench/recipe.py --budget 20 --variants baseline,combined
    OMP_NUM_THREADS=1 python bench/recipe.py --budget 10 --variants vpred,minsnr5
    OMP_NUM_THREADS=1 python bench/recipe.py --budget 20 --variants vpred
    OMP_NUM_THREADS=1 python bench/recipe.py --budget 10 --variants edm,batch32
    OMP_NUM_THREADS=1 python bench/recipe.py --budget 20 --variants edm,batch32
    OMP_NUM_THREADS=1 python bench/recipe.py --budget 10 --variants width48,depth1
    OMP_NUM_THREADS=1 python bench/recipe.py --budget 10 --variants bf16

Results go to docs/recipe.json after every variant; a variant already there (same name, budget and seed) is skipped,
so a stopped run resumes. `--seed S` trains with another training seed (the configs' is 0: initial weights, data
order and noise) to show one seed's spread:

    OMP_NUM_THREADS=1 python bench/recipe.py --budget 20 --variants baseline,depth1 --seed 1

`--n` other than the report's (1,000) scores the same runs at another n, kept apart; a run whose checkpoint is still
in runs/recipe/ is scored again without training (the training is deterministic, so a retrained run is the same run,
and its first 1,000 samples, saved beside the checkpoint, give the same FD):

    OMP_NUM_THREADS=1 python bench/recipe.py --budget 20 --variants baseline,depth1 --n 5000

The measured speeds are kept in the report too and reused, so budgets of later calls share one anchor. A
constant-lr variant's longer budget continues its shorter run exactly (`--resume`): the first steps of a run do not
depend on its length. Checkpoints go to runs/recipe/ (git-ignored).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path

import torch

from difflab.allocator import keep_freed_memory
from difflab.errors import run_script
from difflab.train.config import ExperimentConfig, read_json_object
from difflab.train.trainer import CHECKPOINT, Trainer

ROOT = Path(__file__).resolve().parent.parent
CONFIGS = ROOT / "difflab" / "configs"
REPORT = ROOT / "docs" / "recipe.json"
# today's recipe (configs/fashion_mnist.json before this ablation), pinned so the baseline stays fixed
BASE = {"config": "fashion_mnist.json", "train.warmup": 500, "train.lr": 5e-4, "train.lr_decay": "constant",
        "train.ema_decay": 0.999, "train.batch": 64, "network.num_res_blocks": 2, "train.precision": "fp32"}
# name: (what changed, overrides of BASE as "section.field" or a top-level "key": value, or "config": another file)
VARIANTS = {
    "baseline": ("today's recipe: warm-up 500, lr 5e-4 constant, EMA 0.999, batch 64", {}),
    "warmup50": ("warm-up 500 -> 50", {"train.warmup": 50}),
    "lr1e-3": ("warm-up 50, lr 5e-4 -> 1e-3", {"train.warmup": 50, "train.lr": 1e-3}),
    "lr2e-3": ("warm-up 50, lr 5e-4 -> 2e-3", {"train.warmup": 50, "train.lr": 2e-3}),
    "batch32": ("warm-up 50, lr 1e-3, batch 64 -> 32 (steps by speed)",
                {"train.warmup": 50, "train.lr": 1e-3, "train.batch": 32}),
    "edm": ("warm-up 50, lr 1e-3, EDM preconditioning, loss and log-normal sigma (configs/fashion_mnist_edm.json)",
            {"config": "fashion_mnist_edm.json", "train.warmup": 50, "train.lr": 1e-3}),
    "width48": ("warm-up 50, lr 1e-3, channels 32 -> 48 (steps by speed)",
                {"train.warmup": 50, "train.lr": 1e-3, "network.channels": 48}),
    "depth1": ("warm-up 50, lr 1e-3, res blocks per level 2 -> 1 (steps by speed)",
               {"train.warmup": 50, "train.lr": 1e-3, "network.num_res_blocks": 1}),
    "cosine1e-3": ("warm-up 50, lr 1e-3, cosine to 0 at the last step",
                   {"train.warmup": 50, "train.lr": 1e-3, "train.lr_decay": "cosine"}),
    "combined": ("warm-up 50, lr 1e-3 (the default recipe of the last round)", {"train.warmup": 50, "train.lr": 1e-3}),
    "vpred": ("warm-up 50, lr 1e-3, v-prediction", {"train.warmup": 50, "train.lr": 1e-3, "prediction": "v"}),
    "minsnr5": ("warm-up 50, lr 1e-3, min-SNR-gamma 5 weighting",
                {"train.warmup": 50, "train.lr": 1e-3, "train.min_snr_gamma": 5.0}),
    "bf16": ("the default recipe (depth1) with bf16 autocast (steps by speed)",
             {"train.warmup": 50, "train.lr": 1e-3, "network.num_res_blocks": 1, "train.precision": "bf16"}),
}
EVAL_ENV = {"OMP_NUM_THREADS": "1"}  # the eval command sets malloc itself (difflab.allocator)


def variant_config(name: str, steps: int, seed: int | None = None) -> ExperimentConfig:
    """BASE with the variant's overrides, trained for `steps` (from training seed `seed`, default the config's),
    checkpointed only at the end, no sample grids."""
    overrides = {**BASE, **VARIANTS[name][1]}
    spec = read_json_object(CONFIGS / overrides.pop("config"), "recipe variant")
    for key, value in overrides.items():
        section, _, field = key.partition(".")
        spec[section] = {**spec[section], field: value} if field else value
    config = ExperimentConfig.from_dict(spec)
    return replace(config, train=replace(config.train, steps=steps, minutes=None, checkpoint_every=steps,
                                         sample_every=10 ** 9, seed=config.train.seed if seed is None else seed))


def speed_key(config: ExperimentConfig) -> str:
    """Variants that share this (network, batch and precision) share a training speed; float32 is left out of the
    key, so the speeds of the report's float32 variants keep their keys."""
    precision = {} if config.train.precision == "fp32" else {"precision": config.train.precision}
    return json.dumps({"network": config.to_dict()["network"], "batch": config.train.batch, **precision},
                      sort_keys=True)


def probe_speeds(names: list[str], rounds: int, iters: int, scratch: Path) -> dict[str, float]:
    """Images/s of one training step per speed key, in interleaved rounds of `iters` steps after 2 warm-up steps."""
    trainers = {}
    for name in names:
        config = variant_config(name, 10 ** 6)
        trainers.setdefault(speed_key(config), Trainer(config, scratch / name, progress=False))
    seconds = dict.fromkeys(trainers, 0.0)
    for trainer in trainers.values():
        for _ in range(2):
            trainer.train_step()
    for _ in range(rounds):
        for key, trainer in trainers.items():
            start = time.perf_counter()
            for _ in range(iters):
                trainer.train_step()
            seconds[key] += time.perf_counter() - start
    return {key: rounds * iters * trainers[key].config.train.batch / seconds[key] for key in trainers}


def anchored_speeds(names: list[str], known: dict[str, float], rounds: int, iters: int,
                    scratch: Path) -> dict[str, float]:
    """Speeds of new variants on the scale of the speeds `known` from an earlier probe: the baseline is probed beside
    them (interleaved, so the load of the moment hits all alike) and each new speed is scaled by the baseline's
    known / probed ratio."""
    anchor = speed_key(variant_config("baseline", 1))
    probed = probe_speeds(["baseline", *names] if anchor in known else names, rounds, iters, scratch)
    scale = known[anchor] / probed[anchor] if anchor in known else 1.0
    print(f"speed probe: {', '.join(f'{v:.1f}' for v in probed.values())} images/s; scaled by {scale:.3f} to the "
          f"earlier probe's baseline", flush=True)
    return {key: speed * scale for key, speed in probed.items() if key not in known}


def train(name: str, budget: float, steps: int, seed: int | None, runs: Path, report: dict) -> tuple[Path, float]:
    """Train the variant for `steps`, continuing the longest shorter run of the same recipe and seed where its lr is
    constant (its first steps do not depend on the budget); (checkpoint, seconds of this call)."""
    config = variant_config(name, steps, seed)
    out = runs / f"{name}_b{budget:g}{seed_suffix(seed)}"
    same = VARIANTS[name][1]
    shorter = [r for r in report["results"].values() if VARIANTS[r["variant"]][1] == same and r["steps"] < steps
               and r.get("seed") == seed and Path(r["checkpoint"]).is_file()]
    resume = config.train.lr_decay == "constant" and bool(shorter)
    if resume:
        longest = max(shorter, key=lambda r: r["steps"])
        out.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(longest["checkpoint"], out / CHECKPOINT)
    start = time.perf_counter()
    trainer = Trainer(config, out, resume=resume, progress=False)
    trained_from = trainer.step
    checkpoint = trainer.loop.run()
    seconds = time.perf_counter() - start
    print(f"{name}: trained steps {trained_from}..{trainer.step} in {seconds:.0f} s", flush=True)
    return checkpoint, seconds


def seed_suffix(seed: int | None) -> str:
    """How a run with another training seed is told apart (its result key and folder); none for the config's."""
    return "" if seed is None else f"_seed{seed}"


def result_key(name: str, budget: float, seed: int | None, n: int | None, report: dict) -> str:
    """A result's key: variant@budget, the training seed's suffix, and _nN where scored at another n than the
    report's."""
    n_suffix = "" if n in (None, report.get("n")) else f"_n{n}"
    return f"{name}@{budget:g}{seed_suffix(seed)}{n_suffix}"


def trained(name: str, budget: float, seed: int | None, report: dict) -> dict | None:
    """A result of the same run (variant, budget, training seed) at any n whose checkpoint is still there."""
    for r in report["results"].values():
        if (r["variant"], r["budget"], r.get("seed")) == (name, budget, seed) and Path(r["checkpoint"]).is_file():
            return r
    return None


def fd(checkpoint: Path, config: ExperimentConfig, n: int) -> float:
    """FD of n samples (seed 0, DPM++ 2M, 20 steps) by `difflab eval`, one thread; the samples are saved beside the
    checkpoint (samples_n<n>.npz) for bench/paired_fd.py."""
    grid = "karras" if config.precond.kind == "edm" else "trailing"
    cmd = [sys.executable, "-m", "difflab", "eval", str(checkpoint), "--sampler", "dpmpp_2m", "--steps", "20",
           "--grid", grid, "--n", str(n), "--seed", "0", "--threads", "1", "--json",
           "--save", str(checkpoint.parent / f"samples_n{n}.npz")]
    out = subprocess.run(cmd, check=True, capture_output=True, text=True, env={**os.environ, **EVAL_ENV}).stdout
    return json.loads(out.strip().splitlines()[-1])["fd"]


def table(report: dict) -> str:
    """The ablation table in markdown, per budget, FD ratio to that budget's baseline."""
    rows = ["| budget (core-min) | variant | what changed | images/s | steps | FD | FD / baseline |",
            "|---|---|---|---|---|---|---|"]
    results = sorted(report["results"].values(),
                     key=lambda r: (r["budget"], r.get("n", report.get("n")), r.get("seed") is not None,
                                    r["variant"] != "baseline"))
    for r in results:
        base = report["results"].get(result_key("baseline", r["budget"], r.get("seed"), r.get("n"), report))
        ratio = f"{r['fd'] / base['fd']:.2f}" if base else "-"
        apart = ([] if r.get("seed") is None else [f"seed {r['seed']}"]) + (
            [] if r.get("n") in (None, report.get("n")) else [f"n = {r['n']:,}"])
        label = f" ({', '.join(apart)})" if apart else ""
        rows.append(f"| {r['budget']:g} | {r['variant']}{label} | {r['changed']} | {r['images_per_s']:.1f} | "
                    f"{r['steps']} | {r['fd']:.2f} | {ratio} |")
    return "\n".join(rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--budget", type=float, default=10.0, help="core-minutes per variant")
    parser.add_argument("--variants", default="baseline,warmup50,lr1e-3,lr2e-3,cosine1e-3",
                        help=f"comma-separated, from {', '.join(VARIANTS)}")
    parser.add_argument("--n", type=int, default=1000, help="samples for FD")
    parser.add_argument("--rounds", type=int, default=4, help="speed probe: interleaved rounds")
    parser.add_argument("--iters", type=int, default=4, help="speed probe: steps per variant per round")
    parser.add_argument("--runs", default=str(ROOT / "runs" / "recipe"))
    parser.add_argument("--report", default=str(REPORT))
    parser.add_argument("--seed", type=int, help="training seed (default: the configs', 0)")
    args = parser.parse_args()
    torch.set_num_threads(1)
    keep_freed_memory()  # training runs in this process, not through the CLI
    names = args.variants.split(",")
    unknown = [name for name in names if name not in VARIANTS]
    if unknown:
        sys.exit(f"recipe.py: unknown variant(s) {', '.join(unknown)}; choose from {', '.join(VARIANTS)}")
    runs = Path(args.runs)
    path = Path(args.report)
    report = json.loads(path.read_text()) if path.is_file() else {"n": args.n, "speeds": {}, "results": {}}
    configs = {name: variant_config(name, 1) for name in names}
    missing = [name for name in names if speed_key(configs[name]) not in report["speeds"]]
    if missing:  # measured once, in one process, and kept as the anchor of every budget
        report["speeds"].update(anchored_speeds(missing, report["speeds"], args.rounds, args.iters, runs / "probe"))
        path.write_text(json.dumps(report, indent=1))
    for name in names:
        key = result_key(name, args.budget, args.seed, args.n, report)
        if key in report["results"]:
            continue
        images_per_s = report["speeds"][speed_key(configs[name])]
        steps = round(images_per_s / configs[name].train.batch * 60 * args.budget)  # B minutes at the probed speed
        earlier = trained(name, args.budget, args.seed, report)
        if earlier:
            checkpoint, seconds = Path(earlier["checkpoint"]), earlier["train_seconds"]
        else:
            checkpoint, seconds = train(name, args.budget, steps, args.seed, runs, report)
        report["results"][key] = {
            "variant": name, "changed": VARIANTS[name][0], "budget": args.budget, "seed": args.seed, "n": args.n,
            "images_per_s": images_per_s,
            "steps": steps, "batch": configs[name].train.batch, "train_seconds": seconds,
            "checkpoint": str(checkpoint), "fd": fd(checkpoint, configs[name], args.n),
            "eval": "difflab eval --sampler dpmpp_2m --steps 20 --seed 0 --threads 1 (trailing grid; EDM: karras)"}
        path.write_text(json.dumps(report, indent=1))
        print(table(report), flush=True)
    print(table(report))


if __name__ == "__main__":
    run_script(main)
