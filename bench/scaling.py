"""Training throughput: the speed options side by side in one run, as images/s and ratios.

    python bench/scaling.py [--steps 100] [--batch 64]      # CPU: the bundled recipe's U-Net on Fashion-MNIST
    python bench/scaling.py --gpu [--peak-flops 989e12]    # GPU: a 35M U-Net at 32x32x3 against diffusers
    python bench/scaling.py --gpu --dry-run                # the GPU bench's code on a tiny net on the CPU

CPU mode: each configuration is a real `difflab train --device cpu` run (1 vs 2 torchrun processes, bf16 and
fp16 autocast, --accumulate, --compile); the rate is read from its log.jsonl (the window after the first 50
steps, so start-up, compilation and warm-up are left out).

GPU mode: forward + backward + AdamW steps in bf16 autocast (channels_last) of difflab's U-Net with the DDPM
CIFAR-10 widths (Ho et al. 2020: 128 channels, multipliers 1,2,2,2, two blocks per level, attention at 16x16),
eager and under --compile (difflab.train.speed.CompiledNetwork, as `difflab train --compile` uses it), against
diffusers' UNet2DModel built with the same widths (bench/train_throughput.py's diffusers_unet) in the same run.
Model FLOPs are counted by torch.utils.flop_counter.FlopCounterMode over one eager forward + backward
(convolutions, matmuls, attention; not normalisation or pointwise ops); MFU = achieved FLOP/s / --peak-flops,
by default 989e12, the dense bf16 peak of an H100 SXM: pass your GPU's.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
from torch.utils.flop_counter import FlopCounterMode

from difflab.errors import run_script
from difflab.nets import build_network, network_config
from difflab.precision import autocast
from difflab.train.speed import CompiledNetwork
from train_throughput import DiffusersAdapter, diffusers_unet

CONFIGS = {  # name -> (processes, extra flags)
    "1 process, fp32": (1, []),
    "2 processes (gloo), fp32": (2, []),
    "1 process, bf16 autocast": (1, ["--precision", "bf16"]),
    "1 process, fp16 autocast": (1, ["--precision", "fp16"]),
    "1 process, accumulate 2": (1, ["--accumulate", "2"]),
    "1 process, --compile": (1, ["--compile"]),
}
GPU_UNET = {"kind": "unet", "in_channels": 3, "channels": 128, "channel_mult": [1, 2, 2, 2], "num_res_blocks": 2,
            "attention_levels": [1], "head_dim": 64, "groups": 32, "dropout": 0.1}
DRY_UNET = {**GPU_UNET, "channels": 16, "channel_mult": [1, 2], "head_dim": 16, "groups": 8}
H100_BF16_DENSE = 989e12


def images_per_second(processes: int, flags: list[str], steps: int, batch: int, out: Path) -> float:
    """images/s of the last logged window (steps 51..N with the recipe's log_every of 50)."""
    launcher = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={processes}"]
    command = launcher + ["-m", "difflab", "train", "--steps", str(steps), "--batch", str(batch), "--out", str(out),
                          "--device", "cpu", *flags]
    threads = {"OMP_NUM_THREADS": str(2 // processes)}  # both cores either way: torchrun would give each one
    subprocess.run(command, check=True, capture_output=True, env={**os.environ, **threads})
    return json.loads((out / "log.jsonl").read_text().splitlines()[-1])["images_per_s"]


def cpu_bench(args: argparse.Namespace) -> None:
    rates = {}
    with tempfile.TemporaryDirectory() as tmp:
        for i, (name, (processes, flags)) in enumerate(CONFIGS.items()):
            rates[name] = images_per_second(processes, flags, args.steps, args.batch, Path(tmp) / str(i))
    base = rates["1 process, fp32"]
    print(f"U-Net of configs/fashion_mnist.json, batch {args.batch}, {args.steps} steps per configuration")
    print(f"{'configuration':<28} {'images/s':>9} {'ratio':>6}")
    for name, rate in rates.items():
        print(f"{name:<28} {rate:>9.1f} {rate / base:>5.2f}x")


class GPUModel:
    """One network of the GPU bench with its optimizer and a fixed batch."""

    def __init__(self, net: torch.nn.Module, compiled: bool, x: torch.Tensor, timestep: torch.Tensor):
        self.net = net.to(x.device, memory_format=torch.channels_last)
        self.model = CompiledNetwork(self.net) if compiled else self.net
        self.optimizer = torch.optim.AdamW(self.net.parameters(), lr=1e-4)
        self.x, self.timestep = x, timestep

    def step(self, model: torch.nn.Module | None = None) -> None:
        with autocast(self.x.device, "bf16"):
            net = self.model if model is None else model
            loss = (net(self.x, self.timestep) - self.x).float().pow(2).mean()  # L_simple-shaped
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.optimizer.step()

    def flops(self) -> int:
        """Model FLOPs of one training step (forward + backward), counted on the eager network."""
        with FlopCounterMode(display=False) as counter:
            self.step(self.net)
        return counter.get_total_flops()

    def seconds_per_step(self, steps: int) -> float:
        synchronize(self.x.device)
        start = time.perf_counter()
        for _ in range(steps):
            self.step()
        synchronize(self.x.device)
        return (time.perf_counter() - start) / steps


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def gpu_bench(args: argparse.Namespace) -> None:
    if not args.dry_run and not torch.cuda.is_available():
        raise SystemExit("--gpu needs a CUDA device; --dry-run checks the code on the CPU with a tiny network")
    device = torch.device("cpu") if args.dry_run else torch.device("cuda")
    spec = DRY_UNET if args.dry_run else GPU_UNET
    batch, steps, warmup = (4, 2, 1) if args.dry_run else (args.batch, args.steps, 5)
    config = network_config(spec)
    g = torch.Generator().manual_seed(0)
    x = torch.randn(batch, 3, 32, 32, generator=g).to(device).contiguous(memory_format=torch.channels_last)
    timestep = torch.randint(0, 1000, (batch,), generator=g).float().to(device)
    models: dict[str, GPUModel | None] = {}
    for compiled in (False, True):
        suffix = ", bf16 + compile" if compiled else ", bf16"
        if compiled and args.dry_run:  # inductor takes minutes on a CPU
            models["difflab U-Net" + suffix] = models["diffusers UNet2DModel" + suffix] = None
            continue
        torch.manual_seed(0)
        models["difflab U-Net" + suffix] = GPUModel(build_network(config), compiled, x, timestep)
        models["diffusers UNet2DModel" + suffix] = GPUModel(DiffusersAdapter(diffusers_unet(config)), compiled, x,
                                                            timestep)
    live = {name: model for name, model in models.items() if model is not None}
    flops = {name: model.flops() for name, model in live.items()}
    for model in live.values():
        for _ in range(warmup):  # compilation happens here
            model.step()
    times: dict[str, list[float]] = {name: [] for name in live}
    for _ in range(args.rounds):  # alternating rounds, so drifts in clock or load hit every model alike
        for name, model in live.items():
            times[name].append(model.seconds_per_step(steps))
    where = "dry run on the CPU, not a measurement" if args.dry_run else torch.cuda.get_device_name(device)
    print(f"{where}: 32x32x3, batch {batch}, bf16 autocast, channels_last, {args.rounds} rounds x {steps} steps "
          f"(median), MFU against {args.peak_flops:.3g} FLOP/s")
    print(f"{'model':<38} {'params':>11} {'GFLOP/img':>10} {'images/s':>9} {'MFU':>6} {'vs diffusers':>12}")
    base = batch / statistics.median(times["diffusers UNet2DModel, bf16"])
    for name, model in models.items():
        if model is None:
            print(f"{name:<38} skipped in --dry-run")
            continue
        rate = batch / statistics.median(times[name])
        mfu = flops[name] / batch * rate / args.peak_flops  # achieved model FLOP/s over the peak
        params = sum(p.numel() for p in model.net.parameters())
        print(f"{name:<38} {params:>11,} {flops[name] / batch / 1e9:>10.2f} {rate:>9.1f} {mfu:>6.1%} "
              f"{rate / base:>11.2f}x")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, help="CPU: training steps per configuration, > 50 (default 100); "
                                                  "GPU: timed steps per round (default 20)")
    parser.add_argument("--batch", type=int, help="default 64 (CPU), 128 (GPU)")
    parser.add_argument("--gpu", action="store_true", help="the GPU bench (35M U-Net vs diffusers, images/s and MFU)")
    parser.add_argument("--dry-run", action="store_true", help="with --gpu: run its code on the CPU, tiny and short")
    parser.add_argument("--rounds", type=int, default=3, help="GPU: alternating timing rounds (default 3)")
    parser.add_argument("--peak-flops", type=float, default=H100_BF16_DENSE,
                        help="GPU: peak dense bf16 FLOP/s for MFU (default 989e12, H100 SXM)")
    args = parser.parse_args()
    if args.gpu:
        args.steps, args.batch = args.steps or 20, args.batch or 128
        gpu_bench(args)
    else:
        args.steps, args.batch = args.steps or 100, args.batch or 64
        cpu_bench(args)


if __name__ == "__main__":
    run_script(main)
