"""Few-step and parallel sampling on the bundled Fashion-MNIST model: FD against NFE, and ParaDiGMS' speed-up.

FD (difflab eval's metric: evaluate_images on the feature net, against the 10k test images) of n samples at
NFE 1, 2, 4, 8 for
  - the progressive-distillation students (each round on its own grid: `difflab distill progressive`),
  - a consistency-distilled model (`difflab distill consistency`) and a consistency-trained one
    (`difflab train-consistency`), with the consistency sampler (1 step; 2, 4, 8 with re-noising on the trailing
    or Karras grid of the model, at the levels --consistency-sigmas gives for that NFE, or else at those `difflab
    distill levels` recorded in the model where they cover it), and the distilled
    model's 2-step FD against its re-noising level (--midpoints),
  - the teacher with DPM-Solver++(2M),
and the reference: DDPM ancestral sampling on the full 1000-step chain (--reference-n samples; or a figure given
with --reference-fd when it was measured elsewhere).

ParaDiGMS: wall-clock time of one image at 100 steps, sequential DDIM against paradigms_ddim at each window, in
alternating rounds (the machine is shared: ratios measured side by side), with its sequential rounds and network
evaluations, and the pixel RMS distance of its images from the sequential ones.

    python bench/fewstep.py --pd runs/fewstep/pd --cd runs/fewstep/cd/student.safetensors \
        --ct runs/fewstep/ct/student.safetensors --n 1000 --threads 1

The measured table in the README (n = 5,000) re-noises the CD student at its training levels with
--consistency-sigmas; its commands are there.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import torch

from difflab.commands import BUNDLED_MODEL
from difflab.commands.sample import noise_levels
from difflab.distributed import resolve_device
from difflab.errors import run_script
from difflab.eval.plots import plot_fd_vs_nfe
from difflab.eval.provenance import model_record, refusal
from difflab.eval.report import evaluate_images
from difflab.images import save_samples, to_uint8
from difflab.model import load_model
from difflab.pipelines.generate import generate

NFES = (1, 2, 4, 8)


def fd_of(denoiser, n: int, seed: int, save: Path | None = None, **arguments) -> tuple[float, float]:
    """(FD of n samples, seconds to draw them); the samples also go to `save` (.npz) if given."""
    start = time.perf_counter()
    x = generate(denoiser, (1, 28, 28), n, seed=seed, batch=250, **arguments)
    seconds = time.perf_counter() - start
    if save is not None:
        save.parent.mkdir(parents=True, exist_ok=True)
        save_samples(x, save)
    return evaluate_images(to_uint8(x))["fd"], seconds


def quality(args: argparse.Namespace) -> dict:
    rows: dict[str, list[dict]] = {}

    def record(method: str, nfe: int, path: str, **arguments) -> None:
        save = None if args.save is None else Path(args.save) / f"{method.replace(' ', '_').replace(',', '')}_{nfe}.npz"
        fd, seconds = fd_of(load_model(path).denoiser, args.n, args.seed, save, **arguments)
        rows.setdefault(method, []).append({"nfe": nfe, "fd": fd, "seconds": round(seconds, 1), **arguments})
        print(f"{method:28s} NFE {nfe:4d}  FD {fd:7.2f}  ({seconds:.0f} s)", flush=True)

    if args.pd:
        for path in sorted(Path(args.pd).glob("round_*/student.safetensors")):
            grid = load_model(path).checkpoint.config.student_grid
            record("progressive distillation", grid.steps, str(path), sampler="ddim", steps=grid.steps, grid=grid.kind)
    given = {len(levels): levels for levels in args.consistency_sigmas}
    for name, path in ((args.cd_label, args.cd), ("consistency training", args.ct)):
        if path:
            model = load_model(path)
            chosen = model.checkpoint.config.consistency_levels  # difflab distill levels'
            for nfe in args.nfes:
                levels = given.get(nfe) or (None if chosen is None else chosen.sampling(nfe))
                record(name, nfe, path, sampler="consistency", steps=nfe,
                       **({"grid": model.denoiser.default_grid} if levels is None else {"levels": levels}))
    midpoints = []
    if args.midpoints:
        denoiser = load_model(args.cd).denoiser
        for sigma in args.midpoints:
            fd, _ = fd_of(denoiser, args.n, args.seed, sampler="consistency", steps=2,
                          levels=(denoiser.sigma_max, sigma))
            midpoints.append({"sigma": sigma, "fd": fd})
            print(f"consistency distillation, 2 steps re-noised at sigma {sigma:g}: FD {fd:.2f}", flush=True)
    for nfe in args.teacher_dpm:
        record("teacher, DPM++ 2M", nfe, args.teacher, sampler="dpmpp_2m", steps=nfe, grid="trailing")
    for nfe in args.teacher_ddim:
        record("teacher, DDIM", nfe, args.teacher, sampler="ddim", steps=nfe, grid="trailing")
    if args.reference_n:
        fd, seconds = fd_of(load_model(args.teacher).denoiser, args.reference_n, args.seed, sampler="ddpm",
                            steps=1000, grid="leading")
        reference = {"fd": fd, "n": args.reference_n, "seconds": round(seconds, 1), "source": "measured here",
                     "label": "DDPM-1000", "nfe": 1000}
    else:
        reference = {"fd": args.reference_fd, "n": args.n, "source": args.reference_source,
                     "label": args.reference_label, "nfe": args.reference_nfe}
    print(f"reference: {reference}")
    return {"n": args.n, "curves": rows, "reference": reference, "midpoints": midpoints}


def speed(args: argparse.Namespace) -> dict:
    """Batch-1 generation at 100 steps: sequential DDIM and paradigms_ddim per window, in alternating rounds."""
    device = resolve_device(args.device)
    denoiser = load_model(args.teacher).denoiser.to(device)
    common = {"steps": args.speed_steps, "grid": "trailing", "batch": 1}

    def since(start: float) -> float:
        if device.type == "cuda":  # the kernels queued must have run before the clock stops
            torch.cuda.synchronize(device)
        return time.perf_counter() - start

    times: dict[str, list[float]] = {"ddim": []}
    stats, distance = {}, {}
    for window in args.windows:
        times[f"window {window}"] = []
    for r in range(args.repeats):
        seed = args.seed + r
        start = time.perf_counter()
        sequential = generate(denoiser, (1, 28, 28), 1, sampler="ddim", seed=seed, **common)
        times["ddim"].append(since(start))
        for window in args.windows:
            steps: list = []
            start = time.perf_counter()
            parallel = generate(denoiser, (1, 28, 28), 1, sampler="paradigms_ddim", seed=seed,
                                options={"window": window, "tolerance": args.tolerance},
                                callback=lambda b, s, steps=steps: steps.append(s), **common)
            times[f"window {window}"].append(since(start))
            stats[window] = (steps[-1].rounds, steps[-1].nfe)
            distance.setdefault(window, []).append(float((parallel - sequential).pow(2).mean().sqrt()))
    base = statistics.median(times["ddim"])
    result = {"steps": args.speed_steps, "tolerance": args.tolerance, "repeats": args.repeats,
              "threads": torch.get_num_threads(), "device": str(device), "ddim_seconds": base, "windows": []}
    print(f"sequential DDIM, {args.speed_steps} steps, batch 1: {base:.3f} s (median of {args.repeats})")
    for window in args.windows:
        t = statistics.median(times[f"window {window}"])
        rounds, nfe = stats[window]
        row = {"window": window, "seconds": t, "speedup": base / t, "rounds": rounds, "nfe": nfe,
               "rms_vs_sequential": max(distance[window])}
        result["windows"].append(row)
        print(f"paradigms_ddim window {window:3d}: {t:.3f} s, speed-up {base / t:.2f}x, {rounds} rounds, "
              f"{nfe} evaluations, max pixel RMS from sequential {row['rms_vs_sequential']:.4f} (data range [-1, 1])")
    return result


def plot(report: dict, path: str) -> None:
    curves = {name: [(row["nfe"], row["fd"]) for row in rows] for name, rows in report["quality"]["curves"].items()}
    reference = report["quality"]["reference"]
    if reference.get("fd"):
        curves[f"{reference['label']} (reference)"] = [(reference["nfe"], reference["fd"])]
    plot_fd_vs_nfe(curves, path)


def merge_curves(old: dict[str, list[dict]], new: dict[str, list[dict]]) -> dict[str, list[dict]]:
    """The curves of both reports; where a curve is in both, its rows by NFE, a new row replacing an old one."""
    merged = dict(old)
    for name, rows in new.items():
        by_nfe = {row["nfe"]: row for row in [*old.get(name, []), *rows]}
        merged[name] = [by_nfe[nfe] for nfe in sorted(by_nfe)]
    return merged


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--teacher", default=str(BUNDLED_MODEL))
    parser.add_argument("--pd", help="folder of `difflab distill progressive` (round_K/student.safetensors)")
    parser.add_argument("--cd", help="consistency-distilled student.safetensors")
    parser.add_argument("--cd-label", default="consistency distillation",
                        help="--cd's curve name in the JSON and the plot (one per student)")
    parser.add_argument("--ct", help="consistency-trained student.safetensors")
    parser.add_argument("--consistency-sigmas", nargs="*", type=noise_levels, default=[], metavar="S1,S2,...",
                        help="levels for the consistency sampler at NFE = their number, e.g. 157.40728,0.8")
    parser.add_argument("--midpoints", type=float, nargs="*", default=[],
                        help="--cd's 2-step FD with re-noising at each of these levels")
    parser.add_argument("--n", type=int, default=1000, help="samples per FD (the issue asks 5,000)")
    parser.add_argument("--nfes", type=int, nargs="+", default=list(NFES),
                        help="the consistency models' NFE (default 1 2 4 8)")
    parser.add_argument("--teacher-dpm", type=int, nargs="*", default=list(NFES),
                        help="the teacher's DPM++ 2M at these NFE (default 1 2 4 8)")
    parser.add_argument("--teacher-ddim", type=int, nargs="*", default=[], help="also the teacher's DDIM at these NFE")
    parser.add_argument("--reference-n", type=int, default=0, help="DDPM-1000 samples to draw for the reference")
    parser.add_argument("--reference-fd", type=float, help="the reference FD when it is not drawn here")
    parser.add_argument("--reference-source", default="", help="where --reference-fd was measured")
    parser.add_argument("--reference-label", default="DDPM-1000", help="what --reference-fd measured")
    parser.add_argument("--reference-nfe", type=int, default=1000, help="its network evaluations")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--save", help="also write each row's samples to FOLDER/METHOD_NFE.npz")
    parser.add_argument("--skip-quality", action="store_true")
    parser.add_argument("--skip-speed", action="store_true")
    parser.add_argument("--windows", type=int, nargs="+", default=[4, 8, 16])
    parser.add_argument("--tolerance", type=float, default=0.1)
    parser.add_argument("--speed-steps", type=int, default=100)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--device", default="cpu", help="cpu, cuda or auto: where the ParaDiGMS timing runs")
    parser.add_argument("--json", default="docs/fewstep.json")
    parser.add_argument("--plot", default="docs/fewstep.png")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    report = json.loads(Path(args.json).read_text()) if Path(args.json).is_file() else {}
    teacher = model_record(args.teacher)
    if "quality" in report and not args.skip_quality and (problem := refusal(args.json, report["quality"], teacher,
                                                                            "--json")):
        raise SystemExit(problem)  # its rows are kept, so they must be of the same teacher
    if not args.skip_speed:
        report["paradigms"] = speed(args)
    if not args.skip_quality:  # rows measured before at the same n are kept unless measured again
        new, old = quality(args), report.get("quality", {})
        if old.get("n") == new["n"]:
            new["curves"] = merge_curves(old["curves"], new["curves"])
            new["reference"] = new["reference"] if new["reference"]["fd"] else old["reference"]
            new["midpoints"] = new["midpoints"] or old.get("midpoints", [])
        report["quality"] = {**teacher, **new}
    Path(args.json).write_text(json.dumps(report, indent=1))
    if "quality" in report:
        plot(report, args.plot)
    print(f"wrote {args.json}" + (f" and {args.plot}" if "quality" in report else ""))


if __name__ == "__main__":
    run_script(main)
