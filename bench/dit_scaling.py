"""DiT scaling on Fashion-MNIST: sample quality (FD) against forward Gflops and training speed, for DiT sizes and
patch sizes beside the U-Net (Peebles & Xie 2023, Fig. 6/8 in miniature).

Every model trains --steps at --batch (so on the same number of images) from its recipe: configs/fashion_mnist.json
for "unet", configs/fashion_mnist_dit.json with the named size (difflab.nets.dit.DIT_SIZES) for "DiT-S/4" and the
like. A run already in OUT is resumed, not restarted, and a model measured with the same settings is not measured
again (its row is kept in its run folder). For each model (EMA weights): parameters, forward Gflops
counted at batch 1 (difflab.nets.flops, a multiply-add is 2 flops), training images/s (every model's training step
timed side by side in alternating rounds at the end, so the ratios hold on a busy machine) and FD of --n samples by
DPM++ 2M on the Karras grid as `difflab eval` measures it. Prints a table and writes docs/dit_scaling.json and
docs/dit_scaling.png.

    python bench/dit_scaling.py --steps 1000 --threads 2 --out runs/dit_scaling
    python bench/dit_scaling.py --steps 20 --n 100 --models unet DiT-T/7 --out /tmp/tiny   # smoke run
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import torch

from difflab.data import load_dataset
from difflab.errors import run_script
from difflab.eval.report import evaluate_images
from difflab.images import to_uint8
from difflab.nets.dit import named_size
from difflab.nets.flops import forward_flops, parameter_count
from difflab.pipelines.generate import generate
from difflab.train.checkpoint import load_checkpoint, load_denoiser
from difflab.train.config import ExperimentConfig, load_config
from difflab.train.trainer import CHECKPOINT, Trainer

RECIPES = Path(__file__).resolve().parent.parent / "difflab" / "configs"
DOCS = Path(__file__).resolve().parent.parent / "docs"
MODELS = ("unet", "DiT-S/2", "DiT-S/4", "DiT-T/4", "DiT-B/4")


def model_config(name: str, args: argparse.Namespace) -> ExperimentConfig:
    """The recipe of `name` with this benchmark's budget."""
    if name == "unet":
        config = load_config(RECIPES / "fashion_mnist.json")
    else:
        config = load_config(RECIPES / "fashion_mnist_dit.json")
        config = replace(config, network=replace(config.network, **named_size(name)))
    # float32 for every model: the default recipe's "auto" would train the U-Net alone in bf16 on an AMX CPU
    train = replace(config.train, steps=args.steps, minutes=None, batch=args.batch, device=args.device,
                    sample_every=args.steps, precision="fp32")
    return replace(config, train=train)


def train(name: str, args: argparse.Namespace) -> Path:
    """Train (or resume to --steps) one model; its run folder."""
    out = args.out / name.replace("/", "_")
    resume = (out / CHECKPOINT).is_file()
    if not (resume and load_checkpoint(out / CHECKPOINT).step >= args.steps):
        Trainer(model_config(name, args), out, resume=resume, progress=True).run()
    return out


def measure(name: str, out: Path, args: argparse.Namespace) -> dict:
    """One model's row, kept in its run folder (scaling.json), so a rerun with the same settings reuses it."""
    setting = {"steps": args.steps, "batch": args.batch, "n": args.n, "sampling_steps": args.sampling_steps}
    cached = out / "scaling.json"
    if cached.is_file() and json.loads(cached.read_text())["setting"] == setting:
        return json.loads(cached.read_text())["row"]
    denoiser, checkpoint = load_denoiser(out / CHECKPOINT)
    shape = checkpoint.config.data_shape
    x = generate(denoiser, tuple(shape), args.n, sampler="dpmpp_2m", grid="karras", steps=args.sampling_steps,
                 batch=64, progress=True)
    row = {"model": name, "params": parameter_count(denoiser.net),
           "gflops": forward_flops(denoiser.net, tuple(shape)) / 1e9,
           "fd": evaluate_images(to_uint8(x))["fd"]}
    cached.write_text(json.dumps({"setting": setting, "row": row}, indent=2))
    return row


def training_speed(names: list[str], args: argparse.Namespace, rounds: int = 3, steps: int = 5) -> dict[str, float]:
    """Training images/s of each model (its recipe's step: data, loss, backward, AdamW, EMA), timed side by side in
    alternating rounds after one warm-up step each, so the machine's load hits every model alike."""
    with tempfile.TemporaryDirectory() as tmp:
        trainers = {name: Trainer(model_config(name, args), Path(tmp) / name.replace("/", "_"), progress=False)
                    for name in names}
        seconds: dict[str, list[float]] = {name: [] for name in names}
        for trainer in trainers.values():
            trainer.train_step()
        for _ in range(rounds):
            for name, trainer in trainers.items():
                start = time.perf_counter()
                for _ in range(steps):
                    trainer.train_step()
                seconds[name].append((time.perf_counter() - start) / steps)
    return {name: args.batch / statistics.median(per_step) for name, per_step in seconds.items()}


def plot(rows: list[dict], path: Path, title: str) -> None:
    """FD against forward Gflops and against training images/s, one point per model (the U-Net in red)."""
    import matplotlib
    import matplotlib.ticker

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    axis_labels = {"gflops": "forward Gflops (batch 1)", "images_per_s": "training images/s"}
    for ax, (key, label) in zip(axes, axis_labels.items()):
        for row in rows:
            ax.scatter(row[key], row["fd"], color="tab:red" if row["model"] == "unet" else "tab:blue")
            ax.annotate(row["model"], (row[key], row["fd"]), textcoords="offset points", xytext=(4, 4), fontsize=8)
        ax.set_xscale("log")
        ax.xaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())  # decades only: minor labels collide
        ax.set_xlabel(label)
        ax.set_ylabel("FD (lower is better)")
        ax.grid(alpha=0.3)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--models", nargs="+", default=list(MODELS), help=f"unet and/or DiT-SIZE/PATCH names "
                                                                    f"(default {' '.join(MODELS)})")
    p.add_argument("--steps", type=int, default=1000, help="training steps of every model (default 1000)")
    p.add_argument("--batch", type=int, default=64, help="training batch (default 64)")
    p.add_argument("--n", type=int, default=1000, help="samples per FD (default 1000)")
    p.add_argument("--sampling-steps", type=int, default=20, help="DPM++ 2M steps on the Karras grid (default 20)")
    p.add_argument("--out", type=Path, default=Path("runs/dit_scaling"), help="the training runs")
    p.add_argument("--docs", type=Path, default=DOCS, help="where dit_scaling.json and .png go (default docs/)")
    p.add_argument("--device", default="auto", choices=("cpu", "cuda", "auto"))
    p.add_argument("--threads", type=int, help="torch CPU threads")
    args = p.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    for name in args.models:
        model_config(name, args)  # a bad name fails now, not after the first model has trained
    load_dataset("fashion-mnist", "test")  # and so does missing data
    setup = {"steps": args.steps, "batch": args.batch, "n": args.n, "sampler": "dpmpp_2m", "grid": "karras",
             "sampling_steps": args.sampling_steps}
    title = (f"Fashion-MNIST, {args.steps} steps x batch {args.batch} each; FD of {args.n} samples, "
             f"DPM++ 2M Karras {args.sampling_steps} steps")
    args.docs.mkdir(parents=True, exist_ok=True)
    rows = []
    for name in args.models:
        rows.append(measure(name, train(name, args), args))
        print(json.dumps(rows[-1]), flush=True)
    speed = training_speed(args.models, args)
    rows = [{**row, "images_per_s": speed[row["model"]], "threads": torch.get_num_threads()} for row in rows]
    (args.docs / "dit_scaling.json").write_text(json.dumps({**setup, "models": rows}, indent=2))
    plot(rows, args.docs / "dit_scaling.png", title)

    print(f"\n{title}")
    print(f"{'model':<10}{'params':>10}{'Gflops':>9}{'images/s':>10}{'FD':>8}")
    for row in rows:
        print(f"{row['model']:<10}{row['params'] / 1e6:>9.2f}M{row['gflops']:>9.3f}{row['images_per_s']:>10.1f}"
              f"{row['fd']:>8.2f}")
    print(f"wrote {args.docs / 'dit_scaling.json'} and {args.docs / 'dit_scaling.png'}")


if __name__ == "__main__":
    run_script(main)
