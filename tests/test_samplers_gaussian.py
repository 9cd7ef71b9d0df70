"""Samplers against closed forms: Gaussian data (exact denoiser and probability-flow solution) and a mixture.

The grid is Karras et al.'s (sigma 80 -> 0.002, rho = 7, then 0) in float64. For the ODE solvers the reference is
the exact flow to sigma_min followed by the same final step x0_hat = D(x, sigma_min), so that the errors measured
are the solver's alone (the final jump itself differs from the flow by O(sigma_min^2))."""

from __future__ import annotations

import math
from functools import partial

import pytest
import torch
from samplers_exact import GaussianDenoiser, MixtureDenoiser

from difflab.eval.toy_metrics import sliced_wasserstein

from difflab.grids import append_zero, karras_sigmas
from difflab.samplers import SAMPLERS

SIGMA_MIN, SIGMA_MAX = 0.002, 80.0


def karras(n: int) -> torch.Tensor:
    return append_zero(karras_sigmas(SIGMA_MIN, SIGMA_MAX, n))


def prior(n: int, d: int, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, d, generator=g, dtype=torch.float64) * math.hypot(1.0, SIGMA_MAX)


def flow_error(name: str, steps: int, **options) -> float:
    """Max error of the sampler's endpoint against the exact flow to sigma_min plus the final denoising step."""
    gaussian = GaussianDenoiser(0.3, 0.25)
    x_T = torch.linspace(-2, 2, 5, dtype=torch.float64).view(5, 1) * SIGMA_MAX
    at_min = gaussian.pf_ode_endpoint(x_T, SIGMA_MAX, SIGMA_MIN)
    reference = gaussian(at_min, torch.tensor([SIGMA_MIN]))
    out = SAMPLERS[name].fn(gaussian, x_T.clone(), karras(steps), **options)
    return float((out - reference).abs().max())


# expected order; DPM-Solver-3 converges faster than its order on a Gaussian (observed ~4.5), so only >= 2.7 there
ORDERS = {"euler": 1, "ddim": 1, "dpm_solver_1": 1, "heun": 2, "dpm_solver_2": 2, "dpmpp_2s": 2, "dpmpp_2m": 2,
          "dpmpp_3m": 3, "dpm_solver_3": 3, "dpm_2": 2}


@pytest.mark.parametrize("name", ORDERS)
def test_observed_order_on_a_karras_grid(name):
    errors = [flow_error(name, n) for n in (32, 64, 128)]
    orders = [math.log2(errors[i] / errors[i + 1]) for i in range(2)]
    expected = ORDERS[name]
    assert all(o > expected - 0.3 for o in orders), (errors, orders)
    if name != "dpm_solver_3":
        assert all(o < expected + 0.3 for o in orders), (errors, orders)


@pytest.mark.parametrize("name,twin", [("dpm_2_ancestral", "dpm_2"), ("dpmpp_2s_ancestral", "dpmpp_2s")])
def test_ancestral_forms_take_eta_and_s_noise(name, twin):
    """eta 0 steps to sigma_next with no noise: the solver it is the ancestral form of; s_noise scales the noise."""
    gaussian, x_T = GaussianDenoiser(MU, COV), prior(64, 2, seed=2)
    run = partial(SAMPLERS[name].fn, gaussian, sigmas=karras(8))
    torch.testing.assert_close(run(x_T.clone(), eta=0.0, generator=None), SAMPLERS[twin].fn(gaussian, x_T.clone(),
                                                                                          karras(8)), rtol=0, atol=1e-12)
    quiet = run(x_T.clone(), s_noise=0.0, generator=torch.Generator().manual_seed(1))
    noisy = run(x_T.clone(), generator=torch.Generator().manual_seed(1))
    assert torch.equal(quiet, run(x_T.clone(), s_noise=0.0, generator=torch.Generator().manual_seed(7)))
    assert not torch.allclose(quiet, noisy)


def test_sde_dpm_solver_pp_3m_without_noise_is_third_order():
    """SDE-DPM-Solver++(3M) at eta = 0 solves the flow with order 3 (observed 3.09-3.18), so its D'' term has its full
    Taylor weight (k-diffusion's half weight would leave it second order)."""
    errors = [flow_error("dpmpp_3m_sde", n, eta=0.0) for n in (32, 64, 128)]
    orders = [math.log2(errors[i] / errors[i + 1]) for i in range(2)]
    assert all(2.7 < o < 3.3 for o in orders), (errors, orders)


@pytest.mark.parametrize("order", [1, 2, 3])
@pytest.mark.parametrize("solver_type", ["bh1", "bh2"])
def test_unipc_converges_with_order_p_plus_one(order, solver_type):
    """UniC lifts UniP-p to order p + 1 at one evaluation per step (Zhao et al. 2023, Thm. 3.3); observed 2.0-2.2,
    3.1-3.3 and 4.05-4.07."""
    errors = [flow_error("unipc", n, order=order, solver_type=solver_type) for n in (32, 64, 128)]
    orders = [math.log2(errors[i] / errors[i + 1]) for i in range(2)]
    assert all(order + 1 - 0.3 < o < order + 1 + 0.3 for o in orders), (errors, orders)


def test_probability_flow_endpoint_closed_form():
    """DPM-Solver++(3M), 256 steps, lands on mu + (x_T - mu) s / sqrt(s^2 + sigma_max^2) (up to O(sigma_min^2))."""
    gaussian = GaussianDenoiser(0.3, 0.25)
    x_T = prior(64, 1)
    out = SAMPLERS["dpmpp_3m"].fn(gaussian, x_T.clone(), karras(256))
    torch.testing.assert_close(out, gaussian.pf_ode_endpoint(x_T, SIGMA_MAX), rtol=0, atol=1e-4)


def test_rk45_meets_its_tolerance_and_spends_more_nfe_for_less():
    reports = []
    errors = [flow_error("rk45", 4, rtol=tol, atol=tol, callback=reports.append) for tol in (1e-3, 1e-7)]
    nfe_loose, nfe_tight = reports[3].nfe, reports[-1].nfe
    assert errors[1] < 1e-5 < errors[0] or errors[1] < errors[0] / 100, errors
    assert nfe_tight > 2 * nfe_loose


N_MOMENTS = 10_000
MU = torch.tensor([0.5, -0.3], dtype=torch.float64)
COV = torch.tensor([[0.25, 0.1], [0.1, 0.16]], dtype=torch.float64)
# standard errors of the sample mean and covariance entries; 5 of them is "within sampling error"
SAMPLING_ERROR = 5 * max(float(COV.diag().max() / N_MOMENTS) ** 0.5,
                         float(((COV.diag()[:, None] * COV.diag()[None, :] + COV**2) / N_MOMENTS).max()) ** 0.5)

STOCHASTIC = [("ddpm", {}), ("ddpm", {"variance": "beta"}), ("ddim", {"eta": 1.0}), ("euler_ancestral", {}),
              ("dpmpp_2m_sde", {}), ("dpmpp_2m_sde", {"eta": 0.5}), ("dpmpp_2m_sde", {"eta": 2.0}),
              ("dpmpp_2m_sde_heun", {}), ("dpmpp_2m_sde_heun", {"eta": 0.5}), ("dpmpp_3m_sde", {}),
              ("dpmpp_3m_sde", {"eta": 0.5}), ("dpmpp_2s_ancestral", {}), ("dpm_2_ancestral", {}),
              ("dpm_2", {"s_churn": 10.0}),
              ("euler_maruyama", {"sde": "vp"}), ("euler_maruyama", {"sde": "subvp"}), ("euler_maruyama", {"sde": "ve"}), ("predictor_corrector", {}), ("euler", {"s_churn": 10.0}),
              ("heun", {"s_churn": 10.0}), ("annealed_langevin", {"langevin_steps": 4, "step_size": 0.5})]


def moment_error(name: str, steps: int, options: dict) -> float:
    g = torch.Generator().manual_seed(1)
    out = SAMPLERS[name].fn(GaussianDenoiser(MU, COV), prior(N_MOMENTS, 2, seed=2), karras(steps), generator=g,
                            **options)
    return max(float((out.mean(0) - MU).abs().max()), float((torch.cov(out.T) - COV).abs().max()))


@pytest.mark.parametrize("name,options", STOCHASTIC, ids=["-".join([n, *map(str, o.values())]) for n, o in STOCHASTIC])
def test_stochastic_mean_and_covariance(name, options):
    coarse, fine = moment_error(name, 16, options), moment_error(name, 512, options)
    assert fine < SAMPLING_ERROR, (coarse, fine, SAMPLING_ERROR)
    assert coarse > 2 * fine, (coarse, fine)


MIXTURE = MixtureDenoiser([0.5, 0.3, 0.2], [[-1.0, 0.0], [1.0, 0.5], [0.2, -1.2]], [0.3, 0.4, 0.25])


@pytest.mark.parametrize("name,steps,options", [
    ("dpmpp_2m", 30, {}), ("dpmpp_3m", 30, {}), ("heun", 30, {}), ("dpm_solver_3", 15, {}), ("rk45", 4, {}),
    ("ddpm", 200, {}), ("dpmpp_2m_sde", 100, {}), ("euler_maruyama", 300, {}), ("predictor_corrector", 200, {}),
])
def test_mixture_samples_match_direct_draws(name, steps, options):
    """2-D three-component mixture with its exact denoiser: sliced Wasserstein to direct draws at the noise floor."""
    n = 2000
    direct = MIXTURE.sample(n, torch.Generator().manual_seed(3))
    floor = sliced_wasserstein(direct, MIXTURE.sample(n, torch.Generator().manual_seed(4)))
    out = SAMPLERS[name].fn(MIXTURE, prior(n, 2, seed=5), karras(steps), generator=torch.Generator().manual_seed(6),
                            **options)
    distance = sliced_wasserstein(out, direct)
    assert distance < 2 * floor, (distance, floor)


def test_mixture_guard_detects_a_wrong_sampler():
    """The mixture check can fail: a 3-step Euler run is far from the data."""
    n = 2000
    direct = MIXTURE.sample(n, torch.Generator().manual_seed(3))
    floor = sliced_wasserstein(direct, MIXTURE.sample(n, torch.Generator().manual_seed(4)))
    out = SAMPLERS["euler"].fn(MIXTURE, prior(n, 2, seed=5), karras(3))
    assert sliced_wasserstein(out, direct) > 2 * floor


def test_svgd_particles_match_mixture_moments():
    """SVGD with the exact score at sigma_min: 300 particles reproduce a two-component mixture's mean and covariance
    (after 300 updates, not after 20). Well-separated modes get the wrong share of particles: SVGD's known limit."""
    mixture = MixtureDenoiser([0.6, 0.4], [[-0.6, 0.0], [0.6, 0.3]], [0.5, 0.4])
    mean, cov = mixture.moments()

    def error(steps: int) -> float:
        out = SAMPLERS["svgd"].fn(mixture, prior(300, 2, seed=7), karras(steps))
        return max(float((out.mean(0) - mean).abs().max()), float((torch.cov(out.T) - cov).abs().max()))

    assert error(300) < 0.03 < error(20)
