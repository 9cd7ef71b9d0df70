"""Cascaded generation against one 28x28 model: the 14x14 base alone (upsampled), the cascade base -> SR without
augmentation, and with noise-conditioning augmentation at several levels (Ho et al. 2021). FD of N samples at
28x28 against the Fashion-MNIST test set (the metrics of `difflab eval`), and time per image measured side by side.

    difflab train --config configs/fashion_mnist_14.json --out runs/cascade/base14
    difflab train --config configs/fashion_mnist_sr.json --out runs/cascade/sr_aug
    difflab train --config configs/fashion_mnist_sr.json --low-res-augmentation 0 --out runs/cascade/sr_noaug
    python bench/cascade.py --n 1000 --levels 0,0.1,0.2,0.3 [--only single,base,noaug,aug0.1] [--out runs/bench_cascade]

Samples are cached in --out (NAME.npz, and base14.pt for the base's float samples that every cascade row shares),
so rows can be drawn by separate processes (--only) and the table made by a last run that finds them all. The
folder records the models and settings that drew them (models.json); a run with others is refused.
Time per image: --timing-n images of each row in one batch, rows alternating over --timing-rounds rounds (median).
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import numpy as np
import torch

from difflab.commands import BUNDLED_MODEL
from difflab.errors import run_script
from difflab.eval.provenance import claim_samples
from difflab.eval.report import evaluate_images
from difflab.images import save_samples
from difflab.lowres import upsample
from difflab.model import load_model
from difflab.pipelines.cascade import SuperResolution
from difflab.pipelines.request import Request, plan_request


def plan(model, n: int, seed: int, sampler: str, steps: int, batch: int):
    return plan_request(Request(n=n, seed=seed, sampler=sampler, steps=steps, batch=batch), model.denoiser,
                        model.checkpoint.config)


def rows_of(args) -> dict[str, dict]:
    """Row name -> what it samples: the single model, the base alone, or a cascade (SR model's role, level)."""
    rows = {"single": {"what": f"single-stage 28x28 ({args.sampler} {args.single_steps})"},
            "base": {"what": f"base 14x14 alone, bilinear x2 ({args.sampler} {args.base_steps})"},
            "noaug": {"what": f"cascade, SR trained without augmentation, s = 0 ({args.sampler} "
                              f"{args.base_steps} + {args.sr_steps})", "sr": "sr_noaug", "level": 0.0}}
    for level in args.levels:
        rows[f"aug{level:g}"] = {"what": f"cascade, SR trained with augmentation, s = {level:g}", "sr": "sr_aug",
                                 "level": level}
    return rows


def draw(name: str, row: dict, n: int, models: dict, base_low: callable, args) -> torch.Tensor:
    if name == "single":
        return plan(models["single"], n, args.seed, args.sampler, args.single_steps, args.batch).sample()
    if name == "base":
        return upsample(base_low(n), (28, 28), "bilinear")
    sr_model = models[row["sr"]]
    stage = SuperResolution(plan(sr_model, n, args.seed, args.sampler, args.sr_steps, args.batch),
                            sr_model.checkpoint.config, row["level"])
    return stage.run(base_low(n))


def roles(name: str, row: dict) -> list[str]:
    """The models whose samples a row holds (the 14x14 base's for every row but the single model's)."""
    return ["single"] if name == "single" else ["base", *([row["sr"]] if "sr" in row else [])]


class Models(dict):
    """Checkpoints loaded when first asked for (a process drawing some rows needs only their models)."""

    def __init__(self, aliases: dict[str, str]):
        super().__init__()
        self.aliases = aliases

    def __missing__(self, path: str):
        self[path] = load_model(self.aliases.get(path, path))
        return self[path]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--single", default=str(BUNDLED_MODEL))
    p.add_argument("--base", default="runs/cascade/base14/checkpoint.safetensors")
    p.add_argument("--sr-aug", default="runs/cascade/sr_aug/checkpoint.safetensors")
    p.add_argument("--sr-noaug", default="runs/cascade/sr_noaug/checkpoint.safetensors")
    p.add_argument("--levels", default="0,0.1,0.2,0.3", type=lambda t: [float(v) for v in t.split(",")])
    p.add_argument("--n", type=int, default=1000)
    p.add_argument("--sampler", default="ddim")
    p.add_argument("--single-steps", type=int, default=20)
    p.add_argument("--base-steps", type=int, default=20)
    p.add_argument("--sr-steps", type=int, default=6)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--batch", type=int, default=250)
    p.add_argument("--only", help="comma-separated rows to draw (default: all)")
    p.add_argument("--timing-n", type=int, default=16)
    p.add_argument("--timing-rounds", type=int, default=2)
    p.add_argument("--out", default="runs/bench_cascade")
    p.add_argument("--threads", type=int, default=1)
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    rows = rows_of(args)
    only = list(rows) if args.only is None else args.only.split(",")
    models = Models({role: vars(args)[role] for role in ("single", "base", "sr_aug", "sr_noaug")})
    claim_samples(out, {role: models.aliases[role] for name in only for role in roles(name, rows[name])},
                  {key: vars(args)[key] for key in ("n", "sampler", "single_steps", "base_steps", "sr_steps", "seed")},
                  "--out")
    low_cache: dict[int, torch.Tensor] = {}

    def base_low(n: int) -> torch.Tensor:
        """The base's n float samples, shared by every cascade row (cached on disk for the full n)."""
        if n not in low_cache:
            path = out / "base14.pt"
            if n == args.n and path.is_file():
                low_cache[n] = torch.load(path)
            else:
                low_cache[n] = plan(models["base"], n, args.seed, args.sampler, args.base_steps, args.batch).sample()
                if n == args.n:
                    torch.save(low_cache[n], path)
        return low_cache[n]

    for name in only:
        path = out / f"{name}.npz"
        if not path.is_file():
            start = time.perf_counter()
            save_samples(draw(name, rows[name], args.n, models, base_low, args), path)
            print(f"{name}: {args.n} samples in {time.perf_counter() - start:.0f} s -> {path}", flush=True)
    if args.only is not None:
        return

    seconds: dict[str, list[float]] = {name: [] for name in rows}  # per image, side by side, alternating rows
    for _ in range(args.timing_rounds):
        for name, row in rows.items():
            low_cache.pop(args.timing_n, None)
            start = time.perf_counter()
            draw(name, row, args.timing_n, models, base_low, args)
            seconds[name].append((time.perf_counter() - start) / args.timing_n)
    results = []
    for name, row in rows.items():
        metrics = evaluate_images(np.load(out / f"{name}.npz")["images"])
        results.append({"row": name, "what": row["what"], "fd": metrics["fd"], "kid": metrics["kid"],
                        "precision": metrics["precision"], "recall": metrics["recall"],
                        "ms_per_image": 1000 * statistics.median(seconds[name])})
    single = next(r for r in results if r["row"] == "single")
    print(f"\nN = {args.n} samples each against the 10k test images; time per image: median of "
          f"{args.timing_rounds} alternating rounds of {args.timing_n} images, {args.threads} thread(s)\n")
    print("| row | FD | FD / single | KID | precision | recall | ms / image | time / single |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|")
    for r in results:
        print(f"| {r['what']} | {r['fd']:.2f} | {r['fd'] / single['fd']:.2f} | {r['kid']:.4f} | {r['precision']:.3f} "
              f"| {r['recall']:.3f} | {r['ms_per_image']:.1f} | {r['ms_per_image'] / single['ms_per_image']:.2f} |")
    (out / "results.json").write_text(json.dumps({"args": {k: v for k, v in vars(args).items()}, "rows": results},
                                                 indent=2))


if __name__ == "__main__":
    run_script(main)
