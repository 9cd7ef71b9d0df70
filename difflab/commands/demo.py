"""`difflab demo`: the main job. Samples a grid from the bundled Fashion-MNIST model; with --minutes M it
first trains a fresh model for M minutes with the bundled recipe and shows that model's samples."""

from __future__ import annotations

import argparse
import time
from dataclasses import replace
from pathlib import Path

from difflab.commands import BUNDLED_MODEL, positive_float, set_threads
from difflab.images import save_samples
from difflab.pipelines.generate import generate
from difflab.train.checkpoint import load_denoiser
from difflab.train.config import load_config
from difflab.train.trainer import Trainer

RECIPE = Path(__file__).resolve().parent.parent / "configs" / "fashion_mnist.json"


def register(subparsers) -> None:
    p = subparsers.add_parser("demo", help="sample from the bundled model, or train one for --minutes first",
                              description=__doc__)
    p.add_argument("--minutes", type=positive_float("--minutes"), help="train a fresh model for this long first")
    p.add_argument("--out", default="difflab-demo", help="output folder (default difflab-demo)")
    p.add_argument("--threads", type=int, help="CPU threads for torch")
    p.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    set_threads(args.threads)
    out = Path(args.out)
    if args.minutes is not None:
        config = load_config(RECIPE)
        config = replace(config, train=replace(config.train, steps=None, minutes=args.minutes))
        print(f"training a fresh Fashion-MNIST model for {args.minutes:g} minutes into {out}")
        result = Trainer(config, out).run()
        checkpoint, loss_plot, grid, step = result.checkpoint, result.loss_plot, result.samples, result.step
        print(f"trained {step} steps; samples drawn from its EMA weights (DDIM, {config.train.sample_steps} steps)")
    else:
        denoiser, ckpt = load_denoiser(BUNDLED_MODEL)
        start = time.perf_counter()
        x = generate(denoiser, ckpt.config.data_shape, 64, sampler="ddim", steps=50, seed=0, progress=True)
        grid = out / "samples.png"
        save_samples(x, grid)
        checkpoint, loss_plot, step = BUNDLED_MODEL, BUNDLED_MODEL.with_name("loss.png"), ckpt.step
        print(f"sampled 64 images from the bundled model (DDIM, 50 steps) in {time.perf_counter() - start:.1f} s")
    print(f"samples:    {grid}")
    print(f"loss plot:  {loss_plot}")
    print(f"checkpoint: {checkpoint} (step {step})")
    return 0
