"""Training throughput of the bundled recipe's U-Net on this machine: 1 vs 2 torchrun processes and the speed
options, side by side in one run, as images/s and ratios to the one-process fp32 baseline.

    python bench/scaling.py [--steps 100] [--batch 64]

Each configuration is a real `difflab train` run on Fashion-MNIST; the rate is read from its log.jsonl
(the window after the first 50 steps, so start-up and warm-up are left out).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

CONFIGS = {  # name -> (processes, extra flags)
    "1 process, fp32": (1, []),
    "2 processes (gloo), fp32": (2, []),
    "1 process, bf16 autocast": (1, ["--precision", "bf16"]),
    "1 process, accumulate 2": (1, ["--accumulate", "2"]),
}


def images_per_second(processes: int, flags: list[str], steps: int, batch: int, out: Path) -> float:
    """images/s of the last logged window (steps 51..N with the recipe's log_every of 50)."""
    launcher = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={processes}"]
    command = launcher + ["-m", "difflab", "train", "--steps", str(steps), "--batch", str(batch), "--out", str(out),
                          *flags]
    threads = {"OMP_NUM_THREADS": str(2 // processes)}  # both cores either way: torchrun would give each one
    subprocess.run(command, check=True, capture_output=True, env={**os.environ, **threads})
    return json.loads((out / "log.jsonl").read_text().splitlines()[-1])["images_per_s"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=100, help="> 50")
    parser.add_argument("--batch", type=int, default=64)
    args = parser.parse_args()
    rates = {}
    with tempfile.TemporaryDirectory() as tmp:
        for i, (name, (processes, flags)) in enumerate(CONFIGS.items()):
            rates[name] = images_per_second(processes, flags, args.steps, args.batch, Path(tmp) / str(i))
    base = rates["1 process, fp32"]
    print(f"U-Net of configs/fashion_mnist.json, batch {args.batch}, {args.steps} steps per configuration")
    print(f"{'configuration':<28} {'images/s':>9} {'ratio':>6}")
    for name, rate in rates.items():
        print(f"{name:<28} {rate:>9.1f} {rate / base:>5.2f}x")


if __name__ == "__main__":
    main()
