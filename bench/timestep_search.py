"""Searched time steps against the measured default grids: GITS (Chen et al. 2024, "On the Trajectory Regularity of
ODE-based Diffusion Sampling"), the cheapest path through a teacher trajectory by dynamic programming, on the bundled
Fashion-MNIST model.

A teacher (DPM-Solver++(2M) on --levels noise levels uniform in log-sigma) records the state x and the data prediction D
at every level for --teacher start noises. The cost of one step from level i to level j is the error the solver makes
from the teacher's point at i, against the teacher's point at j, averaged over the noises:
  - first order (DDIM's update, GITS's cost): x_j = (s_j / s_i) x_i + (1 - s_j / s_i) D_i;
  - second order (DPM-Solver++(2M)'s update), which also takes D at the level k before i, so the cost is c(k, i, j) and
    the search runs over pairs of levels.
The last step, to sigma = 0, is x = D_i in both. A cost is the error's norm in the VP scale (divided by sqrt(1 + s_j^2),
where the state has unit size: 'vp') or in the VE scale (GITS's: 've'). The cheapest path of --steps steps from the
noisiest level to 0 is the searched grid.

Each grid is then scored two ways: its global error, the mean distance of the solver's end points from the teacher's
from the teacher's start noises (how well it solves the probability-flow ODE), and FD of --n samples drawn as `difflab
eval` draws them (sample i from seed i), with the paired-bootstrap std of its gap to the sampler's default grid.

    python bench/timestep_search.py --steps 10 --n 2000 --threads 1
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

from difflab.allocator import keep_freed_memory
from difflab.commands import BUNDLED_MODEL, set_threads
from difflab.errors import run_script
from difflab.eval.features import bundled_feature_net, extract, reference_features
from difflab.eval.frechet import frechet_distance, gaussian_moments, paired_gap_std
from difflab.grids import append_zero, log_snr_sigmas, make_grid
from difflab.images import to_uint8
from difflab.model import load_model
from difflab.pipelines.generate import generate
from difflab.pipelines.samplers import default_grid
from difflab.samplers import get_sampler
from difflab.samplers.common import randn_like

INF = float("inf")
# (sampler, grid): a named grid, or a search "gits-<order>-<scale>" (order 1: DDIM's step, 2: DPM-Solver++(2M)'s)
CELLS = (("dpmpp_2m", "karras"), ("dpmpp_2m", "trailing"), ("dpmpp_2m", "gits-2-vp"), ("dpmpp_2m", "gits-1-vp"),
         ("dpmpp_2m", "gits-1-ve"), ("ddim", "trailing"), ("ddim", "gits-1-vp"))


def teacher(denoiser, levels: int, n: int, seed: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The teacher's levels (levels of them, then 0), its states X [levels + 1, n, P] (X[0] the start noise) and data
    predictions D [levels, n, P], from the noises of seeds seed..seed + n - 1."""
    schedule = denoiser.schedule
    sigmas = append_zero(log_snr_sigmas(schedule.sigma_min, schedule.sigma_max, levels))
    x = start_noise(denoiser, n, seed, float(sigmas[0]))
    states, predictions = [x], []

    def record(step) -> None:
        states.append(step.x)
        predictions.append(step.x0_hat)

    get_sampler("dpmpp_2m").fn(denoiser, x, sigmas, callback=record)
    return sigmas, torch.stack(states).flatten(2), torch.stack(predictions).flatten(2)


def start_noise(denoiser, n: int, seed: int, sigma_max: float) -> torch.Tensor:
    generators = [torch.Generator().manual_seed(seed + i) for i in range(n)]
    return randn_like(torch.empty((n, 1, 28, 28), dtype=torch.float64), generators) * denoiser.prior_std(sigma_max)


def scale_of(sigmas: torch.Tensor, scale: str) -> torch.Tensor:
    """Per level, the factor on an error's norm: 1 in the VE scale, 1/sqrt(1 + s^2) (the VP state's scale) in VP."""
    return torch.ones_like(sigmas) if scale == "ve" else (1 + sigmas ** 2).rsqrt()


def first_order_costs(sigmas: torch.Tensor, X: torch.Tensor, D: torch.Tensor, scale: str) -> torch.Tensor:
    """c[i, j]: the mean error of one first-order step from the teacher's point at level i to level j > i (inf
    elsewhere); j = N (sigma 0) is x = D_i."""
    N = len(sigmas) - 1
    weight = scale_of(sigmas, scale)
    costs = torch.full((N + 1, N + 1), INF, dtype=torch.float64)
    for i in range(N):
        j = torch.arange(i + 1, N)
        r = (sigmas[j] / sigmas[i]).view(-1, 1, 1)
        # DDIM in VE coordinates: x_j = (s_j / s_i) x_i + (1 - s_j / s_i) D_i
        costs[i, j] = (r * X[i] + (1 - r) * D[i] - X[j]).norm(dim=2).mean(1) * weight[j]
        costs[i, N] = (D[i] - X[N]).norm(dim=1).mean()
    return costs


def second_order_costs(sigmas: torch.Tensor, X: torch.Tensor, D: torch.Tensor, scale: str) -> torch.Tensor:
    """c[k, i, j]: the mean error of one DPM-Solver++(2M) step from the teacher's point at level i to level j, with the
    previous data prediction at level k < i (inf elsewhere); j = N (sigma 0) is x = D_i."""
    N = len(sigmas) - 1
    weight = scale_of(sigmas, scale)
    lam = -sigmas[:-1].log()  # lambda = -log sigma on the VE grid
    costs = torch.full((N + 1, N + 1, N + 1), INF, dtype=torch.float64)
    for i in range(1, N):
        costs[:i, i, N] = (D[i] - X[N]).norm(dim=1).mean()
        j = torch.arange(i + 1, N)
        if len(j) == 0:
            continue
        r = (sigmas[j] / sigmas[i]).view(-1, 1, 1)
        first = r * X[i] + (1 - r) * D[i] - X[j]  # [J, n, P]: the first-order step's error
        delta = D[i] - D[:i]  # [K, n, P]
        # x_j += (1 - r) / 2 (h / h_prev) (D_i - D_k), h = lam_j - lam_i, h_prev = lam_i - lam_k (Lu 2022b, Alg. 2)
        w = 0.5 * (1 - r.view(-1, 1)) * (lam[j] - lam[i]).view(-1, 1) / (lam[i] - lam[:i]).view(1, -1)  # [J, K]
        # |first + w delta|^2 per noise, from the three inner products
        square = ((first * first).sum(2)[:, None] + 2 * w[..., None] * torch.einsum("jbp,kbp->jkb", first, delta)
                  + (w ** 2)[..., None] * (delta * delta).sum(2)[None])
        costs[:i, i, j] = (square.clamp_min(0).sqrt().mean(2) * weight[j].view(-1, 1)).T
    return costs


def cheapest_path(costs: torch.Tensor, steps: int) -> list[int]:
    """The levels 0 = i_0 < i_1 < ... < i_steps = N of least total cost sum_m c[i_(m-1), i_m]."""
    N = len(costs) - 1
    best = torch.full((N + 1,), INF, dtype=torch.float64)
    best[0] = 0.0
    parents = []
    for _ in range(steps):
        best, parent = (best[:, None] + costs).min(0)  # best_m[j] = min_i best_(m-1)[i] + c[i, j]
        parents.append(parent)
    if best[N] == INF:
        raise ValueError(f"no path of {steps} steps through {N} levels")
    path = [N]
    for parent in reversed(parents):
        path.append(int(parent[path[-1]]))
    return path[::-1]


def cheapest_path_2m(first: torch.Tensor, second: torch.Tensor, steps: int) -> list[int]:
    """As cheapest_path, with a first-order first step (first[0, j]) and then steps that cost second[k, i, j], where k
    is the level before i: dynamic programming over pairs (k, i)."""
    N = len(first) - 1
    best = torch.full((N + 1, N + 1), INF, dtype=torch.float64)  # best[k, i]: reach i from k
    best[0] = first[0]
    parents = []
    for _ in range(steps - 1):
        best, parent = (best[:, :, None] + second).min(0)  # best_m[i, j] = min_k best_(m-1)[k, i] + c[k, i, j]
        parents.append(parent)
    k = int(best[:, N].argmin())
    if best[k, N] == INF:
        raise ValueError(f"no path of {steps} steps through {N} levels")
    path, pair = [N, k], (k, N)
    for parent in reversed(parents):
        previous = int(parent[pair])
        path.append(previous)
        pair = (previous, pair[0])
    return path[::-1]


def searched_levels(name: str, sigmas, X, D, steps: int) -> list[float]:
    """The levels (without the final 0) of the search "gits-<order>-<scale>"."""
    _, order, scale = name.split("-")
    first = first_order_costs(sigmas, X, D, scale)
    path = (cheapest_path(first, steps) if order == "1"
            else cheapest_path_2m(first, second_order_costs(sigmas, X, D, scale), steps))
    return [float(sigmas[i]) for i in path[:-1]]


def global_error(denoiser, sampler: str, grid: torch.Tensor, sigmas: torch.Tensor, X: torch.Tensor) -> float:
    """Mean distance of the sampler's end points on `grid` from the teacher's, from the teacher's start noises (scaled
    to the grid's first level)."""
    x = X[0].view(-1, 1, 28, 28) * (denoiser.prior_std(float(grid[0])) / denoiser.prior_std(float(sigmas[0])))
    return float((get_sampler(sampler).fn(denoiser, x, grid).flatten(1) - X[-1]).norm(dim=1).mean())


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default=str(BUNDLED_MODEL), help="checkpoint (default: the bundled model)")
    p.add_argument("--steps", type=int, default=10)
    p.add_argument("--levels", type=int, default=100, help="the teacher's levels, the search's nodes (default 100)")
    p.add_argument("--teacher", type=int, default=128, help="the teacher's start noises (default 128)")
    p.add_argument("--n", type=int, default=2000, help="samples per FD (default 2000)")
    p.add_argument("--bootstrap", type=int, default=200, help="paired resamples of each gap (default 200)")
    p.add_argument("--out", default="docs/timestep_search.json")
    p.add_argument("--threads", type=int, help="torch CPU threads (1 is fastest on a busy machine)")
    args = p.parse_args()
    set_threads(args.threads)
    keep_freed_memory()
    torch.set_grad_enabled(False)

    denoiser = load_model(args.model).denoiser
    start = time.perf_counter()
    sigmas, X, D = teacher(denoiser, args.levels, args.teacher, seed=10 ** 6)  # noises apart from the FD samples'
    print(f"teacher: {args.levels} levels x {args.teacher} noises in {time.perf_counter() - start:.0f} s", flush=True)
    net, reference = bundled_feature_net()[0], gaussian_moments(reference_features()[0].features)
    rows, features = [], {}
    for sampler, grid in CELLS:
        if grid.startswith("gits"):
            levels = searched_levels(grid, sigmas, X, D, args.steps)
            full = append_zero(torch.tensor(levels, dtype=torch.float64))
        else:
            full = make_grid(denoiser.schedule, args.steps, grid)
            levels = None
        images = to_uint8(generate(denoiser, (1, 28, 28), args.n, sampler=sampler, steps=args.steps,
                                   grid=None if levels else grid, levels=levels, seed=0, batch=250))
        features[sampler, grid] = extract(net, images).features
        fd = frechet_distance(*gaussian_moments(features[sampler, grid]), *reference)
        base = features.get((sampler, default_grid(sampler)))
        gap = None if base is None or grid == default_grid(sampler) else paired_gap_std(
            features[sampler, grid], base, reference, args.bootstrap)
        rows.append({"sampler": sampler, "grid": grid, "sigmas": [round(float(s), 6) for s in full[:-1]],
                     "global_error": round(global_error(denoiser, sampler, full, sigmas, X), 4), "fd": round(fd, 3),
                     "gap_std": None if gap is None else round(gap, 3)})
        print(f"{sampler:<9} {grid:<10} global error {rows[-1]['global_error']:7.3f}  FD {fd:6.2f}"
              + ("" if gap is None else f"  (gap std {gap:.2f})") + "  levels "
              + ",".join(f"{s:.4g}" for s in rows[-1]["sigmas"]), flush=True)
    Path(args.out).write_text(json.dumps({"model": args.model, "steps": args.steps, "levels": args.levels,
                                          "teacher": args.teacher, "n": args.n, "rows": rows}, indent=1) + "\n")


if __name__ == "__main__":
    run_script(main)
