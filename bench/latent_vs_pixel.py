"""Latent vs pixel diffusion on Fashion-MNIST: what the autoencoder costs in quality, and what it buys in speed.

1. The autoencoder's reconstructions of the first --n test images: PSNR, and FD against the test set (by the
   project's FD code), which bounds a latent model's FD from below.
2. A pixel model (configs/fashion_mnist.json) and a latent model (configs/fashion_mnist_latent.json on the
   autoencoder), both unconditional, each trained by `difflab train` for the same --minutes of wall clock, one after
   the other (the latent run encodes the training set first, outside its budget). Training images/s as their logs
   give it, and (the ratio to trust on a busy machine) of one training step of each, timed side by side in
   alternating rounds.
3. Sampling images/s at --speed-steps (default 50) DDIM steps, the latent model's decode included, timed side by
   side in alternating rounds.
4. FD of --n samples of each by `difflab eval` (DDIM, --fd-steps).

    OMP_NUM_THREADS=1 python bench/latent_vs_pixel.py --minutes 5 --n 2000 --out runs/latent_vs_pixel
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import torch

from difflab.data import load_dataset
from difflab.errors import run_script
from difflab.eval.report import evaluate_images
from difflab.images import to_uint8
from difflab.latent import load_autoencoder
from difflab.model import load_model
from difflab.objectives import draw_noise, training_loss
from difflab.pipelines.generate import generate

ROOT = Path(__file__).resolve().parents[1]

BUNDLED_AE = ROOT / "difflab" / "assets" / "fashion_mnist_latent" / "autoencoder.safetensors"
CONFIGS = ROOT / "difflab" / "configs"


def reconstruction(ae: Path, n: int) -> dict:
    """PSNR (over all pixels, peak-to-peak 2 in [-1, 1]) and FD of the decoded test images against the test set."""
    latent = load_autoencoder(ae)
    x = load_dataset("fashion-mnist", "test").batch(torch.arange(n))[0]
    start = time.perf_counter()
    x_hat = torch.cat([latent.decode(latent.encode(x[i: i + 500])) for i in range(0, n, 500)]).clamp(-1, 1)
    seconds = time.perf_counter() - start
    mse = (x_hat - x).square().mean().item()
    psnr = 10 * torch.log10(torch.tensor(4.0 / mse)).item()  # PSNR = 10 log10(peak^2 / MSE), peak 2 in [-1, 1]
    metrics = evaluate_images(to_uint8(x_hat), None)
    return {"n": n, "psnr_db": round(psnr, 2), "fd": round(metrics["fd"], 3), "kid": metrics.get("kid"),
            "latent_shape": list(latent.latent_shape), "scale_factor": latent.scale, "seconds": round(seconds, 1)}


def difflab(*args: str) -> str:
    """Run a difflab command in a subprocess on one thread; its stdout."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    done = subprocess.run([sys.executable, "-m", "difflab", *args], env=env, capture_output=True, text=True)
    if done.returncode:
        raise SystemExit(f"difflab {' '.join(args)} failed:\n{done.stderr[-2000:]}")
    return done.stdout


def train(name: str, config: str, minutes: float, out: Path, extra: list[str]) -> dict:
    """Train for `minutes` of training-loop wall clock; the images/s the loop logged (first window left out)."""
    recipe = json.loads((CONFIGS / config).read_text())
    recipe["train"]["sample_steps"] = 10  # the sample grid written at the end: cheap, it is not measured here
    recipe["train"]["precision"] = "fp32"  # both models alike (the pixel recipe's "auto" is bf16 on an AMX CPU)
    (out / f"{name}.json").write_text(json.dumps(recipe))
    start = time.perf_counter()
    difflab("train", "--config", str(out / f"{name}.json"), "--cond", "none", "--minutes", str(minutes),
            "--steps", "1000000", "--out", str(out / name), *extra)
    rows = [json.loads(line) for line in (out / name / "log.jsonl").read_text().splitlines()]
    rates = [row["images_per_s"] for row in rows[1:]] or [rows[0]["images_per_s"]]
    return {"checkpoint": str(out / name / "checkpoint.safetensors"), "steps": rows[-1]["step"],
            "train_images_per_s": round(sum(rates) / len(rates), 1), "final_loss": round(rows[-1]["loss"], 4),
            "command_seconds": round(time.perf_counter() - start, 1)}


def training_speed(models: dict[str, Path], batch: int, rounds: int) -> dict[str, float]:
    """Images/s of one L_simple training step (forward, backward, AdamW) of each model's network on a batch of its
    data shape, alternating rounds (the data is already encoded: the latent run does that once, up front)."""
    loaded = {name: load_model(path) for name, path in models.items()}
    seconds = dict.fromkeys(loaded, 0.0)
    generator = torch.Generator().manual_seed(0)
    optimizers = {name: torch.optim.AdamW(model.denoiser.net.parameters()) for name, model in loaded.items()}
    for _ in range(rounds):
        for name, model in loaded.items():
            denoiser = model.denoiser.train().requires_grad_(True)
            x0 = torch.randn((batch, *model.sample_shape), generator=generator)
            noise = draw_noise(denoiser.schedule, tuple(x0.shape), generator)
            start = time.perf_counter()
            training_loss("simple", denoiser, x0, noise=noise).mean().backward()
            optimizers[name].step()
            optimizers[name].zero_grad()
            seconds[name] += time.perf_counter() - start
    return {name: round(batch * rounds / s, 1) for name, s in seconds.items()}


def sampling_speed(models: dict[str, Path], n: int, steps: int, rounds: int) -> dict[str, float]:
    """Images/s of each model at `steps` DDIM steps (n images per round, decode included), alternating rounds."""
    loaded = {name: load_model(path) for name, path in models.items()}
    seconds = dict.fromkeys(loaded, 0.0)
    for _ in range(rounds):
        for name, model in loaded.items():
            start = time.perf_counter()
            generate(model.denoiser, model.sample_shape, n, sampler="ddim", steps=steps, batch=n,
                     decode=model.decoder)
            seconds[name] += time.perf_counter() - start
    return {name: round(n * rounds / s, 2) for name, s in seconds.items()}


def fd(checkpoint: str, n: int, steps: int) -> dict:
    start = time.perf_counter()
    metrics = json.loads(difflab("eval", checkpoint, "--n", str(n), "--steps", str(steps), "--json",
                                 "--threads", "1").strip().splitlines()[-1])
    return {"fd": round(metrics["fd"], 3), "precision": metrics.get("precision"), "recall": metrics.get("recall"),
            "seconds": round(time.perf_counter() - start, 1)}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--autoencoder", default=str(BUNDLED_AE))
    p.add_argument("--minutes", type=float, default=5.0, help="training budget of each model")
    p.add_argument("--n", type=int, default=2000, help="test images reconstructed, and samples per FD")
    p.add_argument("--fd-steps", type=int, default=50)
    p.add_argument("--speed-steps", type=int, default=50)
    p.add_argument("--speed-n", type=int, default=32)
    p.add_argument("--rounds", type=int, default=2)
    p.add_argument("--skip", nargs="*", default=[], choices=["reconstruction", "train", "speed", "fd"])
    p.add_argument("--out", default="runs/latent_vs_pixel")
    args = p.parse_args()
    torch.set_num_threads(1)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    report_path = out / "report.json"
    report = json.loads(report_path.read_text()) if report_path.is_file() else {}
    report["settings"] = vars(args)

    def save() -> None:
        report_path.write_text(json.dumps(report, indent=2))
        print(json.dumps(report, indent=2), flush=True)

    if "reconstruction" not in args.skip:
        report["reconstruction"] = reconstruction(Path(args.autoencoder), args.n)
        save()
    if "train" not in args.skip:
        report["pixel"] = train("pixel", "fashion_mnist.json", args.minutes, out, [])
        save()
        report["latent"] = train("latent", "fashion_mnist_latent.json", args.minutes, out,
                                 ["--autoencoder", args.autoencoder])
        save()
    models = {name: Path(report[name]["checkpoint"]) for name in ("pixel", "latent")}
    if "speed" not in args.skip:
        speed = training_speed(models, 64, args.rounds * 3)
        report["training_step_images_per_s"] = {**speed, "batch": 64,
                                                "latent_over_pixel": round(speed["latent"] / speed["pixel"], 2)}
        speed = sampling_speed(models, args.speed_n, args.speed_steps, args.rounds)
        report["sampling_images_per_s"] = {**speed, "steps": args.speed_steps,
                                           "latent_over_pixel": round(speed["latent"] / speed["pixel"], 2)}
        save()
    if "fd" not in args.skip:
        for name, path in models.items():
            report[name]["eval"] = {"n": args.n, "steps": args.fd_steps, **fd(str(path), args.n, args.fd_steps)}
            save()


if __name__ == "__main__":
    run_script(main)
