"""bench/timestep_search.py: the step costs are the samplers' own updates, and the dynamic programs find the cheapest
path (against brute force)."""

from __future__ import annotations

import importlib.util
import itertools
from pathlib import Path

import torch

from difflab.samplers.dpm_solver import multistep_update

ROOT = Path(__file__).resolve().parents[1]
spec = importlib.util.spec_from_file_location("bench_timestep_search", ROOT / "bench" / "timestep_search.py")
bench = importlib.util.module_from_spec(spec)
spec.loader.exec_module(bench)


def random_trajectory(levels: int = 6, n: int = 5, size: int = 7, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    sigmas = bench.append_zero(torch.tensor([40.0, 9.0, 3.0, 1.2, 0.4, 0.05][:levels], dtype=torch.float64))
    X = torch.randn(levels + 1, n, size, generator=g, dtype=torch.float64) * (1 + sigmas.view(-1, 1, 1))
    D = torch.randn(levels, n, size, generator=g, dtype=torch.float64)
    return sigmas, X, D


def test_second_order_costs_are_dpmpp_2m_steps_from_the_teacher():
    sigmas, X, D = random_trajectory()
    N = len(sigmas) - 1
    for scale in ("vp", "ve"):
        costs = bench.second_order_costs(sigmas, X, D, scale)
        weight = bench.scale_of(sigmas, scale)
        for k, i, j in itertools.combinations(range(N + 1), 3):
            s_k, s_i, s_j = sigmas[k], sigmas[i], sigmas[j]
            if j == N:
                step = D[i]  # the last step, to sigma = 0, is x0_hat
            else:
                step = multistep_update(X[i], s_i, s_j, [D[k], D[i]], [torch.log(s_k / s_i)], 2)
            expected = (step - X[j]).norm(dim=1).mean() * (1 if j == N else weight[j])
            torch.testing.assert_close(costs[k, i, j], expected)
        assert torch.isinf(costs[2, 1, 3]) and torch.isinf(costs[0, 3, 2])


def test_first_order_costs_are_ddim_steps_and_vanish_on_a_point_mass():
    sigmas, X, D = random_trajectory()
    N = len(sigmas) - 1
    costs = bench.first_order_costs(sigmas, X, D, "ve")
    for i, j in itertools.combinations(range(N), 2):
        step = multistep_update(X[i], sigmas[i], sigmas[j], [D[i]], [], 1)
        torch.testing.assert_close(costs[i, j], (step - X[j]).norm(dim=1).mean())
    # data at one point mu: D = mu everywhere and the ODE's path x_s = mu + (s / s_0)(x_0 - mu) is a DDIM step
    mu = torch.randn(1, 1, 7, dtype=torch.float64)
    X = mu + (sigmas / sigmas[0]).view(-1, 1, 1) * (X[:1] - mu)
    D = mu.expand(N, *X.shape[1:])
    for order_costs in (bench.first_order_costs(sigmas, X, D, "vp"), bench.second_order_costs(sigmas, X, D, "vp")):
        finite = order_costs[order_costs.isfinite()]
        assert len(finite) > 0 and float(finite.abs().max()) < 1e-12


def brute_force(cost, N: int, steps: int) -> float:
    return min(cost((0, *middle, N)) for middle in itertools.combinations(range(1, N), steps - 1))


def test_cheapest_paths_match_brute_force():
    g = torch.Generator().manual_seed(1)
    N = 8
    first = torch.rand(N + 1, N + 1, generator=g, dtype=torch.float64).triu(1)
    first[first == 0] = bench.INF
    second = torch.rand(N + 1, N + 1, N + 1, generator=g, dtype=torch.float64)
    k, i, j = torch.meshgrid(*(torch.arange(N + 1),) * 3, indexing="ij")
    second[~((k < i) & (i < j))] = bench.INF

    def cost_1(path):
        return float(sum(first[a, b] for a, b in zip(path, path[1:])))

    def cost_2(path):
        return float(first[path[0], path[1]] + sum(second[a, b, c] for a, b, c in zip(path, path[1:], path[2:])))

    for steps in (1, 2, 3, 5, N):
        path = bench.cheapest_path(first, steps)
        assert len(path) == steps + 1 and path[0] == 0 and path[-1] == N
        assert abs(cost_1(path) - brute_force(cost_1, N, steps)) < 1e-12
        path = bench.cheapest_path_2m(first, second, steps)
        assert len(path) == steps + 1 and path[0] == 0 and path[-1] == N and path == sorted(set(path))
        assert abs(cost_2(path) - brute_force(cost_2, N, steps)) < 1e-12
