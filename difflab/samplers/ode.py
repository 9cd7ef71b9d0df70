"""Euler and Heun for the probability-flow ODE in the EDM formulation (Karras et al. 2022, Alg. 1 and 2), and
k-diffusion's DPM2 (its DPM-Solver-2 form on the same ODE) with its ancestral variant."""

from __future__ import annotations

import math

import torch

from difflab.samplers import register
from difflab.samplers.common import Callback, Generator, ancestral, churn, report, sigma_batch, to_d


def churned_euler_start(
    denoiser, x: torch.Tensor, sigmas: torch.Tensor, i: int, generator: Generator, callback: Callback, *,
    s_churn: float, s_tmin: float, s_tmax: float, s_noise: float,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Step i's start, shared by Euler, Heun and DPM2 (Alg. 2 lines 4-7): churn x to sigma_hat, denoise and report;
    returns (x_hat, d = (x_hat - D(x_hat, sigma_hat)) / sigma_hat, dt = sigma_next - sigma_hat in x's dtype,
    sigma_hat)."""
    x, sigma_hat = churn(x, sigmas[i], len(sigmas) - 1, generator, s_churn=s_churn, s_tmin=s_tmin, s_tmax=s_tmax,
                         s_noise=s_noise)
    x0_hat = denoiser(x, sigma_batch(sigma_hat, x))
    report(callback, i, sigmas, x, x0_hat)
    return x, to_d(x, sigma_batch(sigma_hat, x), x0_hat), (sigmas[i + 1] - sigma_hat).to(x.dtype), sigma_hat


@register("euler", order=1, stochastic=False, nfe_per_step=1)
@torch.no_grad()
def sample_euler(
    denoiser, x: torch.Tensor, sigmas: torch.Tensor, *, generator: Generator = None, callback: Callback = None,
    s_churn: float = 0.0, s_tmin: float = 0.0, s_tmax: float = math.inf, s_noise: float = 1.0,
) -> torch.Tensor:
    """Euler on dx/dsigma = (x - D(x, sigma)) / sigma (Karras et al. 2022, Alg. 2 without the 2nd-order correction)."""
    for i in range(len(sigmas) - 1):
        x, d, dt, _ = churned_euler_start(denoiser, x, sigmas, i, generator, callback, s_churn=s_churn,
                                          s_tmin=s_tmin, s_tmax=s_tmax, s_noise=s_noise)
        x = x + dt * d  # Alg. 2 line 8
    return x


@register("heun", order=2, stochastic=False, nfe_per_step=2)
@torch.no_grad()
def sample_heun(
    denoiser, x: torch.Tensor, sigmas: torch.Tensor, *, generator: Generator = None, callback: Callback = None,
    s_churn: float = 0.0, s_tmin: float = 0.0, s_tmax: float = math.inf, s_noise: float = 1.0,
) -> torch.Tensor:
    """Heun's 2nd-order method, Euler on the last step to sigma = 0 (Karras et al. 2022, Alg. 2, with S_churn)."""
    for i in range(len(sigmas) - 1):
        sigma_next = sigmas[i + 1]
        x, d, dt, _ = churned_euler_start(denoiser, x, sigmas, i, generator, callback, s_churn=s_churn,
                                          s_tmin=s_tmin, s_tmax=s_tmax, s_noise=s_noise)
        x_euler = x + dt * d  # Alg. 2 line 8
        if sigma_next == 0:
            x = x_euler
        else:
            d_next = to_d(x_euler, sigma_batch(sigma_next, x), denoiser(x_euler, sigma_batch(sigma_next, x)))
            x = x + dt * (d + d_next) / 2  # Alg. 2 line 11: trapezoidal rule
    return x


def dpm2_step(denoiser, x: torch.Tensor, d: torch.Tensor, sigma, sigma_next) -> torch.Tensor:
    """An Euler step to the log-midpoint sigma_mid = sqrt(sigma sigma_next), then the whole step with the derivative
    there (k-diffusion's sample_dpm_2: DPM-Solver-2, Lu et al. 2022a Alg. 4 with r1 = 1/2, on dx/dsigma)."""
    sigma_mid = (sigma * sigma_next).sqrt()  # exp of the mean of log sigma and log sigma_next
    x_mid = x + d * (sigma_mid - sigma).to(x.dtype)
    d_mid = to_d(x_mid, sigma_batch(sigma_mid, x), denoiser(x_mid, sigma_batch(sigma_mid, x)))
    return x + d_mid * (sigma_next - sigma).to(x.dtype)


@register("dpm_2", order=2, stochastic=False, nfe_per_step=2)
@torch.no_grad()
def sample_dpm_2(
    denoiser, x: torch.Tensor, sigmas: torch.Tensor, *, generator: Generator = None, callback: Callback = None,
    s_churn: float = 0.0, s_tmin: float = 0.0, s_tmax: float = math.inf, s_noise: float = 1.0,
) -> torch.Tensor:
    """DPM2 (k-diffusion): the log-midpoint rule on the EDM ODE, Euler on the last step to sigma = 0, with S_churn."""
    for i in range(len(sigmas) - 1):
        x, d, dt, sigma_hat = churned_euler_start(denoiser, x, sigmas, i, generator, callback, s_churn=s_churn,
                                                  s_tmin=s_tmin, s_tmax=s_tmax, s_noise=s_noise)
        x = x + dt * d if sigmas[i + 1] == 0 else dpm2_step(denoiser, x, d, sigma_hat, sigmas[i + 1])
    return x


@register("dpm_2_ancestral", order=1, stochastic=True, nfe_per_step=2)
@torch.no_grad()
def sample_dpm_2_ancestral(
    denoiser, x: torch.Tensor, sigmas: torch.Tensor, *, generator: Generator = None, callback: Callback = None,
    eta: float = 1.0, s_noise: float = 1.0,
) -> torch.Tensor:
    """DPM2 ancestral (k-diffusion): a DPM2 step to sigma_down, then fresh noise of std sigma_up (eta scales it)."""

    def step(x, x0_hat, sigma, sigma_down):
        return dpm2_step(denoiser, x, to_d(x, sigma_batch(sigma, x), x0_hat), sigma, sigma_down)

    return ancestral(denoiser, x, sigmas, generator, callback, eta, s_noise, step)
