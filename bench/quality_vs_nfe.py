"""Sample quality against network evaluations (NFE) for every sampler on a 2-D toy model.

Quality is the sliced Wasserstein distance (SW1, 128 random directions) between the samples and fresh draws of
the toy distribution; the reference is DDPM ancestral sampling on the full 1000-step chain. Every sampler runs at
NFE 5, 10, 20, 50, 100 on one grid kind (default karras; its steps chosen so that it spends at most that NFE),
rk45 at a ladder of tolerances. Prints a table, writes a plot, and reports the smallest NFE at which
DPM-Solver++(2M) reaches the 1000-step ancestral quality.

    difflab train --data toy:8gaussians --steps 3000 --out runs/toy
    python bench/quality_vs_nfe.py runs/toy/checkpoint.safetensors [--n 10000] [--plot quality_vs_nfe.png] [--threads 1]
"""

from __future__ import annotations

import argparse
import math
import time

import torch

from difflab.data.toy import sample_toy
from difflab.errors import run_script
from difflab.grids import GRIDS, make_grid
from difflab.samplers import SAMPLERS
from difflab.samplers.common import randn_like
from difflab.eval.toy_metrics import sliced_wasserstein
from difflab.train.checkpoint import load_denoiser

NFES = (5, 10, 20, 50, 100)
RK45_TOLERANCES = (1e-1, 3e-2, 1e-2, 3e-3, 1e-3)
SCAN_NFES = (8, 15, 30, 75, 200)  # more points for DPM-Solver++(2M)


class Counted(torch.nn.Module):
    """Counts network evaluations of a denoiser."""

    def __init__(self, denoiser):
        super().__init__()
        self.denoiser, self.calls = denoiser, 0

    def forward(self, x, sigma):
        self.calls += 1
        return self.denoiser(x, sigma)


def steps_for(name: str, nfe: int) -> int:
    """Grid steps whose NFE does not exceed `nfe`: the last step of Heun / DPM-Solver-k costs 1, ALD and SVGD add
    a final denoising evaluation."""
    per_step = SAMPLERS[name].nfe_per_step
    if name in ("heun", "dpm_solver_2", "dpm_solver_3", "dpmpp_2s"):
        return max(1, (nfe - 1) // per_step + 1)
    if name in ("annealed_langevin", "svgd"):
        return max(1, nfe - 1)
    return max(1, nfe // per_step)


def run(denoiser, name: str, sigmas: torch.Tensor, n: int, seed: int, **options) -> tuple[torch.Tensor, int]:
    counted = Counted(denoiser)
    x = randn_like(torch.empty(n, 2, dtype=torch.float64), torch.Generator().manual_seed(seed))
    x = x * denoiser.prior_std(float(sigmas[0]))
    out = SAMPLERS[name].fn(counted, x, sigmas, generator=torch.Generator().manual_seed(seed + 1), **options)
    return out, counted.calls


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("checkpoint", help="a toy-data checkpoint (difflab train --data toy:NAME)")
    p.add_argument("--n", type=int, default=10_000, help="samples per run (default 10000)")
    p.add_argument("--grid", default="karras", choices=GRIDS, help="grid for every sampler (default karras)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--plot", default="quality_vs_nfe.png", help="PNG to write")
    p.add_argument("--threads", type=int, help="torch CPU threads (1 is fastest on a busy machine)")
    args = p.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    torch.set_grad_enabled(False)
    denoiser, checkpoint = load_denoiser(args.checkpoint)
    data = checkpoint.config.train.data
    if not data.startswith("toy:"):
        raise SystemExit(f"{args.checkpoint} was trained on {data!r}; this benchmark needs a toy:NAME model")
    g = torch.Generator().manual_seed(args.seed + 100)
    target = sample_toy(data[4:], args.n, g)
    floor = sliced_wasserstein(target, sample_toy(data[4:], args.n, g))
    start = time.perf_counter()
    reference, _ = run(denoiser, "ddpm", make_grid(denoiser.schedule, denoiser.schedule.timesteps, "leading"),
                       args.n, args.seed)
    sw_reference = sliced_wasserstein(reference, target)
    print(f"{data}, {args.n} samples, {args.grid} grid; SW1 between two draws of the data (noise floor) {floor:.4f}")
    print(f"reference: ddpm ancestral, 1000 steps: SW1 {sw_reference:.4f} ({time.perf_counter() - start:.1f} s)\n",
          flush=True)

    print(f"{'sampler':<22}" + "".join(f"{'NFE ' + str(nfe):>11}" for nfe in NFES) + "   (SW1; [NFE] where it differs)")
    curves: dict[str, list[tuple[int, float]]] = {}
    for name in sorted(SAMPLERS):
        if name == "rk45":  # one output level besides sigma_min: its NFE is set by the tolerance
            settings = [({"rtol": tol, "atol": tol}, 2) for tol in RK45_TOLERANCES]
        else:
            settings = [({}, steps_for(name, nfe)) for nfe in NFES]
        for options, steps in settings:
            out, calls = run(denoiser, name, make_grid(denoiser.schedule, steps, args.grid), args.n, args.seed,
                             **options)
            distance = sliced_wasserstein(out, target) if torch.isfinite(out).all() else math.inf
            curves.setdefault(name, []).append((calls, distance))
        if name == "rk45":
            cells = [f"{d:.4f}[{c}]" for c, d in curves[name]]
        else:
            cells = [f"{d:.4f}" + ("" if c == nfe else f"[{c}]") for (c, d), nfe in zip(curves[name], NFES)]
        print(f"{name:<22}" + "".join(f"{cell:>11}" for cell in cells), flush=True)
    print(f"rk45 at rtol = atol = {', '.join(f'{t:g}' for t in RK45_TOLERANCES)}")

    scan = sorted({*NFES, *SCAN_NFES})
    dpmpp = [(nfe, sliced_wasserstein(run(denoiser, "dpmpp_2m", make_grid(denoiser.schedule, nfe, args.grid),
                                          args.n, args.seed)[0], target)) for nfe in scan]
    reached = next((nfe for nfe, d in dpmpp if d <= sw_reference), None)
    print(f"\nDPM-Solver++(2M), {args.grid} grid: " + ", ".join(f"NFE {nfe}: {d:.4f}" for nfe, d in dpmpp))
    print(f"it reaches the 1000-step ancestral SW1 ({sw_reference:.4f}) at NFE "
          f"{reached if reached is not None else f'> {scan[-1]} (not within the NFE tried)'}")

    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 5.5))
    for i, (name, points) in enumerate(curves.items()):
        shown = [(c, d) for c, d in points if math.isfinite(d)]
        ax.plot(*zip(*shown), marker="o", ms=3, label=name, color=plt.cm.tab20(i % 20),
                ls="--" if SAMPLERS[name].stochastic else "-")
    ax.axhline(sw_reference, color="k", lw=1, label="ddpm, 1000 steps")
    ax.axhline(floor, color="grey", lw=1, ls=":", label="noise floor")
    ax.set(xscale="log", yscale="log", xlabel="network evaluations", ylabel="sliced Wasserstein-1",
           title=f"{data}: quality vs NFE ({args.grid} grid)")
    ax.legend(fontsize=7, ncol=2)
    fig.tight_layout()
    fig.savefig(args.plot, dpi=120)
    print(f"plot: {args.plot}")


if __name__ == "__main__":
    run_script(main)
