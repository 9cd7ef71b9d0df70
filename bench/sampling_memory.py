"""Sampling CPU time in user and kernel mode against the batch size, with glibc malloc as it comes and with
difflab's setting (difflab/allocator.py: freed memory kept for reuse).

Each cell is one `difflab sample` process (DDIM on the bundled model, the same n and seed); its user and system CPU
seconds come from the kernel's accounting of the child (resource.RUSAGE_CHILDREN), so load from other processes
does not enter them. Cells run in alternating order, the two allocators side by side at each batch size.

    python bench/sampling_memory.py [--batches 16,32,64,128,250,500] [--n 500] [--steps 10] [--threads 1]
        [--out docs/sampling_memory.json]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from difflab.allocator import OPT_OUT, USER_SETTINGS
from difflab.commands import BUNDLED_MODEL
from difflab.errors import run_script
from difflab.eval.provenance import model_record

SETTINGS = {"glibc default": {OPT_OUT: "1"}, "difflab (freed memory kept)": {}}


def run_cell(model: str, batch: int, n: int, steps: int, threads: int, extra_env: dict[str, str]) -> dict[str, float]:
    """User, system and wall seconds of one `difflab sample` process."""
    env = {k: v for k, v in os.environ.items() if k not in (*USER_SETTINGS, OPT_OUT)} | extra_env
    with tempfile.TemporaryDirectory() as tmp:
        cmd = [sys.executable, "-m", "difflab", "sample", model, "--sampler", "ddim",
               "--steps", str(steps), "--n", str(n), "--batch", str(batch), "--threads", str(threads), "--seed", "0",
               "--out", str(Path(tmp) / "samples.npz")]
        before, start = resource.getrusage(resource.RUSAGE_CHILDREN), time.perf_counter()
        subprocess.run(cmd, env=env, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        after, wall = resource.getrusage(resource.RUSAGE_CHILDREN), time.perf_counter() - start
    return {"user": after.ru_utime - before.ru_utime, "sys": after.ru_stime - before.ru_stime, "wall": wall}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default=str(BUNDLED_MODEL), help="checkpoint (default: the bundled model)")
    parser.add_argument("--batches", default="16,32,64,128,250,500")
    parser.add_argument("--n", type=int, default=500)
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--out", default="docs/sampling_memory.json")
    args = parser.parse_args()
    batches = [int(b) for b in args.batches.split(",")]
    rows = []
    for i, batch in enumerate(batches):
        names = list(SETTINGS) if i % 2 == 0 else list(reversed(SETTINGS))
        for name in names:
            cell = run_cell(args.model, batch, args.n, args.steps, args.threads, SETTINGS[name])
            # network evaluations per CPU second: n images x steps / (user + sys)
            cell |= {"batch": batch, "malloc": name, "images_steps_per_cpu_s": args.n * args.steps /
                     (cell["user"] + cell["sys"])}
            rows.append(cell)
            print(f"batch {batch:>4}  {name:<28} user {cell['user']:7.1f} s  sys {cell['sys']:6.1f} s  "
                  f"wall {cell['wall']:6.1f} s  {cell['images_steps_per_cpu_s']:6.1f} image-steps per CPU s",
                  flush=True)
    report = {"command": " ".join(["python", "bench/sampling_memory.py", *sys.argv[1:]]), "n": args.n,
              "steps": args.steps, "threads": args.threads, "sampler": "ddim",
              **model_record(args.model), "rows": rows}
    Path(args.out).write_text(json.dumps(report, indent=1) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    run_script(main)
