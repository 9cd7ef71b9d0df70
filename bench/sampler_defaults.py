"""FD of every sampler on every grid of the bundled Fashion-MNIST model, from which each sampler's default grid is
chosen (SAMPLER_GRIDS in difflab/pipelines/samplers.py).

Each cell draws n samples (sample i from seed + i, as `difflab eval` draws them: every cell shares its start noise, so
differences between cells are paired) and scores them with `difflab eval`'s metric (evaluate_images: FD in the
feature net's space against the 10k test images). Cells go to the JSON as they finish and cells already there are
skipped, so a run can be stopped, resumed and extended (more steps, grids, samplers or a larger n); a cell with a
smaller n than one saved under --save takes that cell's first n samples (the ones it would draw). The table shows
one n: rows sampler x grid, columns steps, `*` on each sampler's best grid per column, `d` on its default.

    python bench/sampler_defaults.py --n 500 --steps 10 --threads 1 --save runs/sampler_defaults
    python bench/sampler_defaults.py --n 500 --steps 20 --samplers dpmpp_2m,dpmpp_2m_sde --grids karras,trailing \
        --threads 1 --save runs/sampler_defaults
    python bench/sampler_defaults.py --n 500 --table --save runs/sampler_defaults --bootstrap 200
    difflab eval difflab/assets/fashion_mnist/model.safetensors --sampler ddpm --steps 1000 --n 250 --seed 0 \
        --threads 1 --json > ddpm1000_n250.json
    python bench/sampler_defaults.py --n 250 --steps 10 --save runs/sampler_defaults --reference ddpm1000_n250.json

Samplers left out by default, and why:
  - euler and dpm_solver_1: the same update as ddim (eta = 0), bitwise on this model (checked on linspace,
    trailing and karras);
    euler_ancestral: ddim with eta = 1, which is ddpm's posterior step on a fixed-variance model (bitwise here).
    The table shows them as the sampler they equal.
  - paradigms_*: reproduce their base sampler to their tolerance; consistency: needs a consistency model;
    rk45: adaptive, its steps are set by --rtol/--atol, not by the grid; svgd: uses only the grid's smallest level;
    annealed_langevin, predictor_corrector: several network evaluations per level (a corrector budget, not a grid
    question); euler_maruyama: pass it with --samplers (cheap, one evaluation per step).
  - grid respaced: needs --sections, a per-model choice rather than a default.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch

from difflab.allocator import keep_freed_memory
from difflab.commands import BUNDLED_MODEL, set_threads
from difflab.errors import run_script
from difflab.eval.features import bundled_feature_net, extract, reference_features
from difflab.eval.frechet import gaussian_moments, paired_gap_std
from difflab.eval.provenance import model_record, refusal
from difflab.eval.report import evaluate_images
from difflab.images import to_uint8
from difflab.model import load_model
from difflab.pipelines.generate import generate
from difflab.pipelines.samplers import default_grid
from difflab.samplers import SAMPLERS

SAMPLER_NAMES = ("ddim", "ddpm", "dpmpp_2m", "dpmpp_3m", "dpmpp_2m_sde", "heun", "dpm_solver_2", "dpmpp_2s",
                 "dpm_solver_3", "unipc", "dpm_2", "dpm_2_ancestral", "dpmpp_2s_ancestral", "dpmpp_3m_sde")
SAME_UPDATE = {"euler": "ddim", "dpm_solver_1": "ddim", "euler_ancestral": "ddpm"}  # sampler -> the one it equals
GRID_NAMES = ("linspace", "leading", "trailing", "karras", "log_snr")
METRICS = ("fd", "kid", "precision", "recall")


def names(text: str, allowed) -> list[str]:
    chosen = [name.strip() for name in text.split(",") if name.strip()]
    unknown = [name for name in chosen if name not in allowed]
    if unknown:
        raise SystemExit(f"unknown {', '.join(unknown)}; choose from {', '.join(allowed)}")
    return chosen


def same_cell(a: dict, b: dict) -> bool:
    return all(a[key] == b[key] for key in ("sampler", "grid", "steps", "n", "seed"))


def network_evaluations(sampler: str, steps: int) -> int:
    """NFE of one sample: a multi-evaluation solver (heun, dpm_solver_2/3, dpmpp_2s) spends one on its last step."""
    per_step = SAMPLERS[sampler].nfe_per_step
    return steps if per_step == 1 else per_step * (steps - 1) + 1


def saved_head(cell: dict, cells: list[dict], save: Path | None) -> tuple[np.ndarray, int] | None:
    """The first n samples of a saved cell with more of them, and its n: sample i uses seed + i, so they are the
    samples this cell would draw; None when there is none."""
    larger = [c for c in cells if c["n"] > cell["n"] and all(c[key] == cell[key] for key in ("sampler", "grid",
                                                                                            "steps", "seed"))]
    found = [c for c in larger if save is not None and sample_file(save, c).exists()]
    return None if not found else (np.load(sample_file(save, found[0]))["images"][: cell["n"]], found[0]["n"])


def measure(denoiser, cell: dict, batch: int, cells: list[dict], save: Path | None) -> dict:
    """One cell: n samples drawn as `difflab eval` draws them (or the head of a saved larger cell), and their
    metrics; drawn samples go to `save`/ too."""
    head = saved_head(cell, cells, save)
    start = time.perf_counter()
    if head is None:
        x = generate(denoiser, (1, 28, 28), cell["n"], sampler=cell["sampler"], steps=cell["steps"],
                     grid=cell["grid"], seed=cell["seed"], batch=batch)
        images = to_uint8(x)
        if save is not None:
            save.mkdir(parents=True, exist_ok=True)
            np.savez_compressed(sample_file(save, cell), images=images)
    else:
        images = head[0]
    seconds = time.perf_counter() - start
    metrics = evaluate_images(images)
    return {**cell, "nfe": network_evaluations(cell["sampler"], cell["steps"]),
            **{key: metrics[key] for key in METRICS}, "sample_seconds": round(seconds, 1),
            **({} if head is None else {"head_of_n": head[1]})}


def append_cell(out: Path, report: dict, cell: dict) -> dict:
    """The report with `cell` added, written to `out` (read again first: another run may have added cells)."""
    report = json.loads(out.read_text()) if out.exists() else report
    report["cells"].append(cell)
    out.write_text(json.dumps(report, indent=1) + "\n")
    return report


def table(cells: list[dict], n: int, seed: int, reference: dict | None) -> str:
    """Rows sampler x grid, columns steps, FD; `*` marks each sampler's lowest FD per column; `d` its default."""
    cells = [c for c in cells if c["n"] == n and c["seed"] == seed]
    steps = sorted({c["steps"] for c in cells})
    samplers = [s for s in (*SAMPLER_NAMES, *sorted(SAMPLERS)) if any(c["sampler"] == s for c in cells)]
    samplers = list(dict.fromkeys(samplers))
    fd = {(c["sampler"], c["grid"], c["steps"]): c["fd"] for c in cells}
    header = f"{'sampler':<14} {'grid':<9}" + "".join(f"{f'{s} steps':>14}" for s in steps)
    lines = [(f"FD at n = {n} (seed {seed}; lower is better); * best grid of the sampler at that step count, d its "
              f"default grid"), header]
    for sampler in samplers:
        for grid in GRID_NAMES:
            if not any((sampler, grid, s) in fd for s in steps):
                continue
            row = f"{sampler:<14} {grid + (' d' if default_grid(sampler) == grid else ''):<9}"
            for s in steps:
                value = fd.get((sampler, grid, s))
                best = min((v for (a, _, t), v in fd.items() if a == sampler and t == s), default=None)
                row += f"{'':>14}" if value is None else f"{value:>13.2f}{'*' if value == best else ' '}"
            lines.append(row)
    aliases = ", ".join(f"{a} = {b}" for a, b in SAME_UPDATE.items())
    lines.append(f"({aliases}: the same update, see the module docstring)")
    if reference is not None:
        lines.append(f"reference: {reference['label']}, FD {reference['fd']:.2f} at n = {reference['n']}")
        for s in steps:
            best = min((c for c in cells if c["steps"] == s and c["grid"] == default_grid(c["sampler"])),
                       key=lambda c: c["fd"], default=None)
            if best is not None and reference["n"] == n:
                lines.append(f"best {s}-step default: {best['sampler']} on {best['grid']}, FD {best['fd']:.2f} = "
                             f"{best['fd'] / reference['fd']:.2f}x the reference's")
    return "\n".join(lines)


def sample_file(save: Path, cell: dict) -> Path:
    return save / f"{cell['sampler']}_{cell['grid']}_{cell['steps']}_n{cell['n']}_seed{cell['seed']}.npz"


def gaps(cells: list[dict], n: int, seed: int, save: Path, rounds: int) -> str:
    """Per sampler and step count: each grid's FD above the best grid's, with the paired-bootstrap std of that gap
    (the same indices resampled in both cells, since sample i shares its noise; the reference set held fixed)."""
    reference = gaussian_moments(reference_features()[0].features)
    net = bundled_feature_net()[0]
    cells = [c for c in cells if c["n"] == n and c["seed"] == seed and sample_file(save, c).exists()]
    lines = [f"FD gap to the sampler's best grid, +- its paired-bootstrap std ({rounds} rounds, n = {n})"]
    for sampler, steps in dict.fromkeys((c["sampler"], c["steps"]) for c in cells):
        row = sorted((c for c in cells if c["sampler"] == sampler and c["steps"] == steps), key=lambda c: c["fd"])
        features = [extract(net, np.load(sample_file(save, c))["images"]).features for c in row]
        text = [f"{c['grid']} +{c['fd'] - row[0]['fd']:.2f} +- {paired_gap_std(f, features[0], reference, rounds):.2f}"
                for c, f in zip(row[1:], features[1:])]
        lines.append(f"{sampler:<14} {steps:>3} steps: {row[0]['grid']} {row[0]['fd']:.2f}; " + ", ".join(text))
    return "\n".join(lines)


def read_reference(path: str | None) -> dict | None:
    """The DDPM-1000 figure from a `difflab eval --json` file."""
    if path is None:
        return None
    try:
        result = json.loads(Path(path).read_text())
    except (OSError, json.JSONDecodeError):
        raise SystemExit(f"--reference {path}: no `difflab eval --json` result there (yet)") from None
    label = f"{result['sampler']}, {result['steps']} steps" if "sampler" in result else result["source"]  # or a file's
    return {"label": label, "fd": result["fd"], "n": result["n"]}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default=str(BUNDLED_MODEL), help="checkpoint (default: the bundled model)")
    p.add_argument("--n", type=int, default=2000, help="samples per cell (default 2000)")
    p.add_argument("--steps", default="10,20,50", help="comma-separated step counts (default 10,20,50)")
    p.add_argument("--samplers", default=",".join(SAMPLER_NAMES), help="comma-separated (default: see docstring)")
    p.add_argument("--grids", default=",".join(GRID_NAMES), help="comma-separated (default: all but respaced)")
    p.add_argument("--seed", type=int, default=0, help="sample i uses seed + i (default 0)")
    p.add_argument("--batch", type=int, default=250)
    p.add_argument("--out", default="docs/sampler_defaults.json", help="results, read first and extended")
    p.add_argument("--reference", help="a `difflab eval --json` result to show under the table (DDPM-1000)")
    p.add_argument("--save", help="also write each cell's samples (uint8 .npz) to this folder")
    p.add_argument("--bootstrap", type=int, default=0,
                   help="also print each grid's FD gap to the best with its paired-bootstrap std over this many "
                        "resamples of the samples in --save (default 0: no)")
    p.add_argument("--table", action="store_true", help="only print the table of what --out holds")
    p.add_argument("--threads", type=int, help="torch CPU threads (1 is fastest on a busy machine)")
    args = p.parse_args()
    if args.bootstrap and args.save is None:
        raise SystemExit("--bootstrap reads the samples of --save FOLDER: give --save")
    set_threads(args.threads)
    keep_freed_memory()  # sampling runs in this process, not through the CLI
    torch.set_grad_enabled(False)

    out = Path(args.out)
    model = None if args.table else model_record(args.model)
    report = json.loads(out.read_text()) if out.exists() else {**(model or {}), "cells": []}
    if model is not None:
        if problem := refusal(out, report, model, "--out"):
            raise SystemExit(problem)
        denoiser = load_model(args.model).denoiser
        for sampler in names(args.samplers, sorted(SAMPLERS)):
            for grid in names(args.grids, GRID_NAMES):
                for steps in (int(s) for s in args.steps.split(",")):
                    cell = {"sampler": sampler, "grid": grid, "steps": steps, "n": args.n, "seed": args.seed}
                    if any(same_cell(cell, done) for done in report["cells"]):
                        continue
                    cell = measure(denoiser, cell, args.batch, report["cells"],
                                   None if args.save is None else Path(args.save))
                    report = append_cell(out, report, cell)
                    print(f"{sampler:<14} {grid:<9} {steps:>4} steps  n {args.n}  FD {cell['fd']:7.2f}  "
                          f"({cell['sample_seconds']:.0f} s)", flush=True)
    print(table(report["cells"], args.n, args.seed, read_reference(args.reference)))
    if args.bootstrap:
        print(gaps(report["cells"], args.n, args.seed, Path(args.save), args.bootstrap))


if __name__ == "__main__":
    run_script(main)
