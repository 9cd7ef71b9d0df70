"""Likelihood and sample quality of L_simple (fixed variance) against L_hybrid (learned variance) on Fashion-MNIST.

Both models train with the same recipe and budget (configs/fashion_mnist.json, --steps); a run already in OUT is
resumed, not restarted. For each model (EMA weights):
  - test-set bits/dim by the full T-step variational bound (discretized decoder) and by the probability-flow
    ODE (Hutchinson, uniform dequantization), each with its standard error, over the first --n-nll test images;
  - FD (difflab.eval, feature net) of --n-fd DDPM samples on Nichol & Dhariwal's respaced grid at 25 and 50 steps:
    L_simple with beta_tilde and with beta, L_hybrid with its learned variance.
Prints a table and writes OUT/likelihood.json.

    python bench/likelihood.py --steps 20000 --n-nll 1000 --n-fd 5000 --out runs/bench_likelihood
    OMP_NUM_THREADS=1 python bench/likelihood.py --steps 200 --n-nll 4 --n-fd 100 --out /tmp/tiny   # smoke run
"""

from __future__ import annotations

import argparse
import json
import time
from dataclasses import replace
from pathlib import Path

import torch

from difflab.data import load_dataset
from difflab.distributed import resolve_device
from difflab.errors import run_script
from difflab.eval.report import evaluate_images
from difflab.images import to_uint8
from difflab.likelihood.evaluate import images_bits_per_dim
from difflab.pipelines.generate import generate
from difflab.train.checkpoint import load_checkpoint, load_denoiser
from difflab.train.config import load_config
from difflab.train.trainer import CHECKPOINT, Trainer

RECIPE = Path(__file__).resolve().parent.parent / "difflab" / "configs" / "fashion_mnist.json"
FD_STEPS = (25, 50)
# model -> the DDPM variances its samples are drawn with
VARIANTS = {"simple": ("beta_tilde", "beta"), "hybrid": ("learned",)}


def train(loss: str, args: argparse.Namespace) -> Path:
    """Train (or resume to --steps) the recipe with this loss; hybrid turns on the learned variance."""
    recipe = load_config(args.config)
    config = replace(recipe, network=replace(recipe.network, learned_variance=loss != "simple"),
                     train=replace(recipe.train, loss=loss, steps=args.steps, minutes=None, device=args.device,
                                   precision="fp32"))  # as measured; not the recipe's "auto"
    out = args.out / loss
    resume = (out / CHECKPOINT).is_file()
    if resume and load_checkpoint(out / CHECKPOINT).step >= args.steps:
        return out / CHECKPOINT
    return Trainer(config, out, resume=resume, progress=True).run().checkpoint


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--steps", type=int, default=20_000, help="training steps of each model (default 20000)")
    p.add_argument("--n-nll", type=int, default=1000, help="test images for bits/dim (default 1000)")
    p.add_argument("--n-fd", type=int, default=5000, help="samples per FD (default 5000; at least 10)")
    p.add_argument("--out", type=Path, default=Path("runs/bench_likelihood"), help="runs and likelihood.json")
    p.add_argument("--config", default=str(RECIPE), help="the training recipe (default configs/fashion_mnist.json)")
    p.add_argument("--batch", type=int, default=64, help="batch for NLL and sampling (default 64)")
    p.add_argument("--rtol", type=float, default=1e-5, help="PF-ODE tolerance, rtol = atol (default 1e-5)")
    p.add_argument("--device", default="auto", choices=("cpu", "cuda", "auto"))
    p.add_argument("--threads", type=int, help="torch CPU threads")
    args = p.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = resolve_device(args.device)
    test = load_dataset("fashion-mnist", "test")
    images = test.batch(slice(0, args.n_nll))[0]
    results = {"steps": args.steps, "n_nll": len(images), "n_fd": args.n_fd, "models": {}}
    for loss, variances in VARIANTS.items():
        checkpoint = train(loss, args)
        denoiser, _ = load_denoiser(checkpoint)
        denoiser = denoiser.to(device)
        row = {}
        for method in ("vlb", "ode"):
            start = time.perf_counter()
            nll = images_bits_per_dim(denoiser, images, method=method, batch=args.batch, rtol=args.rtol,
                                      atol=args.rtol, progress=True)
            row[method] = {"bits_per_dim": nll.mean, "standard_error": nll.standard_error, "nfe": nll.nfe,
                           "seconds": round(time.perf_counter() - start, 1)}
            print(f"{loss}: {method} {nll.mean:.4f} +- {nll.standard_error:.4f} bits/dim", flush=True)
        for variance in variances:
            for steps in FD_STEPS:
                x = generate(denoiser, tuple(test.shape), args.n_fd, sampler="ddpm", steps=steps, grid="respaced",
                             batch=args.batch, options={"variance": variance}, progress=True)
                fd = evaluate_images(to_uint8(x))["fd"]
                row[f"fd_{variance}_{steps}"] = fd
                print(f"{loss}: FD, ddpm {variance}, {steps} respaced steps: {fd:.3f}", flush=True)
        results["models"][loss] = row
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "likelihood.json").write_text(json.dumps(results, indent=2))

    print(f"\nFashion-MNIST, {args.steps} training steps each; bits/dim on {len(images)} test images; "
          f"FD of {args.n_fd} DDPM samples on the respaced grid")
    header = f"{'model':<30}{'VLB bits/dim':>18}{'ODE bits/dim':>18}" + "".join(f"{f'FD {s}':>10}" for s in FD_STEPS)
    print(header)
    for loss, variances in VARIANTS.items():
        row = results["models"][loss]
        for i, variance in enumerate(variances):
            nll = [f"{row[m]['bits_per_dim']:.3f} +- {row[m]['standard_error']:.3f}" if i == 0 else ""
                   for m in ("vlb", "ode")]
            fds = "".join(f"{row[f'fd_{variance}_{s}']:>10.2f}" for s in FD_STEPS)
            print(f"{loss + ' (ddpm ' + variance + ')':<30}{nll[0]:>18}{nll[1]:>18}{fds}")
    print(f"wrote {args.out / 'likelihood.json'}")


if __name__ == "__main__":
    run_script(main)
