"""Sampling speed in float32 and bf16 (`--precision bf16`): network evaluations per second of one sampler on a
checkpoint, the two precisions timed side by side in alternating rounds (median), at each batch size. With one thread
a round is timed by the process's CPU time, which other processes do not inflate; with more, by the wall clock.
Quality is measured apart, on the same seeds (`difflab eval --precision P --save`, then `bench/paired_fd.py`).

    python bench/sampling_precision.py [--model M] [--sampler dpmpp_2m] [--steps 10] [--n 128] [--batches 64,250]
        [--rounds 3] [--threads 1] [--json FILE]
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import torch

from difflab.allocator import keep_freed_memory
from difflab.commands import BUNDLED_MODEL, set_threads
from difflab.errors import run_script
from difflab.eval.provenance import model_record
from difflab.model import load_model
from difflab.pipelines.generate import generate
from difflab.precision import SAMPLING_PRECISIONS


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default=str(BUNDLED_MODEL))
    p.add_argument("--sampler", default="dpmpp_2m")
    p.add_argument("--steps", type=int, default=10)
    p.add_argument("--n", type=int, default=128, help="samples per timed round")
    p.add_argument("--batches", default="64,250")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--json", help="also write the figures here")
    args = p.parse_args()
    set_threads(args.threads)
    keep_freed_memory()
    clock = time.process_time if torch.get_num_threads() == 1 else time.perf_counter
    model = load_model(args.model)
    denoiser, shape = model.denoiser, model.sample_shape
    evaluated = [0]  # rows through the network, counted as it runs

    def count(module, inputs) -> None:
        evaluated[0] += len(inputs[0])

    denoiser.net.register_forward_pre_hook(count)
    rows = []
    for batch in (int(b) for b in args.batches.split(",")):
        seconds = {precision: [] for precision in SAMPLING_PRECISIONS}
        for r in range(args.rounds + 1):  # round 0 warms up each precision's kernels
            for precision in SAMPLING_PRECISIONS:
                evaluated[0], start = 0, clock()
                generate(denoiser, shape, args.n, sampler=args.sampler, steps=args.steps, batch=batch,
                         precision=precision)
                if r > 0:
                    seconds[precision].append((clock() - start) / evaluated[0])
        rate = {precision: 1 / statistics.median(s) for precision, s in seconds.items()}
        rows.append({"batch": batch, **{f"{precision}_evals_per_s": rate[precision] for precision in rate}})
        print(f"batch {batch:>4}: fp32 {rate['fp32']:7.1f}, bf16 {rate['bf16']:7.1f} evaluations/s: "
              f"{rate['bf16'] / rate['fp32']:.2f}x", flush=True)
    if args.json:
        report = {**model_record(args.model), "sampler": args.sampler, "steps": args.steps, "n": args.n,
                  "threads": torch.get_num_threads(), "clock": "CPU time" if clock is time.process_time else "wall",
                  "rows": rows}
        Path(args.json).write_text(json.dumps(report, indent=1) + "\n")


if __name__ == "__main__":
    run_script(main)
