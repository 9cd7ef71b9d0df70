"""A refiner (the SDXL refiner: a second denoiser for the low-noise end) against its base model alone: FD, KID,
precision and recall of N samples at 28x28 (the metrics of `difflab eval`), same seeds, sampler and steps per row.

    difflab train --init difflab/assets/fashion_mnist/model.safetensors --max-timestep 200 --lr 2e-4 \\
        --steps 2000 --out runs/refiner/low200
    python bench/refiner.py --refiner runs/refiner/low200/checkpoint.safetensors --switch 0.8 0.9 --n 2000

A refiner trained on t < 200 of 1000 covers the last 20 % of a trailing grid: --switch 0.8 hands it exactly those
steps. Samples are cached in --out (NAME.npz), so an interrupted run draws only the rows it lacks; the folder
records its models and settings (models.json), and a run with another base, refiner, n, sampler, steps or
seed is refused.
"""

from __future__ import annotations

import argparse
import json
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch

from difflab.allocator import keep_freed_memory
from difflab.commands import BUNDLED_MODEL
from difflab.errors import run_script
from difflab.eval.features import bundled_feature_net, extract, reference_features
from difflab.eval.frechet import gaussian_moments, paired_gap_std
from difflab.eval.provenance import claim_samples
from difflab.eval.report import evaluate_features
from difflab.images import save_samples
from difflab.model import load_model
from difflab.pipelines.refiner import Refined
from difflab.pipelines.request import Request, plan_request


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--base", default=str(BUNDLED_MODEL))
    p.add_argument("--refiner", required=True)
    p.add_argument("--switch", type=float, nargs="+", default=[0.8], help="refiner_switch_at values, one row each")
    p.add_argument("--n", type=int, default=2000)
    p.add_argument("--sampler", default="ddim")
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--batch", type=int, default=250)
    p.add_argument("--out", default="runs/bench_refiner")
    p.add_argument("--bootstrap", type=int, default=200, help="rounds of the paired bootstrap of each row's FD gap "
                   "to the base (its samples share their seeds)")
    p.add_argument("--threads", type=int, default=1)
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    keep_freed_memory()
    out = Path(args.out)
    claim_samples(out, {"base": args.base, "refiner": args.refiner},
                  {key: vars(args)[key] for key in ("n", "sampler", "steps", "seed")}, "--out")
    base, refiner = load_model(args.base), load_model(args.refiner)
    plan = plan_request(Request(n=args.n, seed=args.seed, sampler=args.sampler, steps=args.steps, batch=args.batch),
                        base.denoiser, base.checkpoint.config)
    rows = {"base": ("base alone", plan)}
    for switch in args.switch:
        rows[f"refined{switch:g}"] = (f"base -> refiner at switch {switch:g}",
                                      replace(plan, denoiser=Refined(plan.denoiser, refiner.denoiser, switch)))
    results, features = [], []
    reference, net = gaussian_moments(reference_features()[0].features), bundled_feature_net()[0]
    for name, (what, row_plan) in rows.items():
        path = out / f"{name}.npz"
        if not path.is_file():
            start = time.perf_counter()
            save_samples(row_plan.sample(), path)
            print(f"{name}: {args.n} samples in {time.perf_counter() - start:.0f} s -> {path}", flush=True)
        extracted = extract(net, np.load(path)["images"])
        metrics, features = evaluate_features(extracted), [*features, extracted.features]
        gap_std = paired_gap_std(features[-1], features[0], reference, args.bootstrap) if args.bootstrap else None
        results.append({"row": name, "what": what, **{k: metrics[k] for k in ("fd", "kid", "precision", "recall")},
                        "gap_std": gap_std})
    print(f"\nN = {args.n} samples each against the 10k test images; {args.sampler} {args.steps} steps on "
          f"{plan.sampler.grid}, seed {args.seed}; refiner {args.refiner}\n")
    print(f"| row | FD | FD - base (paired-bootstrap std, {args.bootstrap} rounds) | FD / base | KID | precision | "
          f"recall |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    for r in results:
        gap = ("" if r is results[0] or r["gap_std"] is None
               else f"{r['fd'] - results[0]['fd']:+.2f} +- {r['gap_std']:.2f}")
        print(f"| {r['what']} | {r['fd']:.2f} | {gap} | {r['fd'] / results[0]['fd']:.3f} | {r['kid']:.4f} "
              f"| {r['precision']:.3f} | {r['recall']:.3f} |")
    (out / "results.json").write_text(json.dumps({"args": vars(args), "rows": results}, indent=2))


if __name__ == "__main__":
    run_script(main)
