"""Euler and Heun for the probability-flow ODE in the EDM formulation (Karras et al. 2022, Alg. 1 and 2)."""

from __future__ import annotations

import math

import torch

from difflab.samplers import register
from difflab.samplers.common import Callback, Generator, churn, report, sigma_batch, to_d


@register("euler", order=1, stochastic=False, nfe_per_step=1)
@torch.no_grad()
def sample_euler(
    denoiser, x: torch.Tensor, sigmas: torch.Tensor, *, generator: Generator = None, callback: Callback = None,
    s_churn: float = 0.0, s_tmin: float = 0.0, s_tmax: float = math.inf, s_noise: float = 1.0,
) -> torch.Tensor:
    """Euler on dx/dsigma = (x - D(x, sigma)) / sigma (Karras et al. 2022, Alg. 2 without the 2nd-order correction)."""
    steps = len(sigmas) - 1
    for i in range(steps):
        x, sigma_hat = churn(x, sigmas[i], steps, generator, s_churn=s_churn, s_tmin=s_tmin, s_tmax=s_tmax,
                             s_noise=s_noise)
        x0_hat = denoiser(x, sigma_batch(sigma_hat, x))
        report(callback, i, sigmas, x, x0_hat)
        d = to_d(x, sigma_batch(sigma_hat, x), x0_hat)
        x = x + (sigmas[i + 1] - sigma_hat).to(x.dtype) * d  # Alg. 2 line 8
    return x


@register("heun", order=2, stochastic=False, nfe_per_step=2)
@torch.no_grad()
def sample_heun(
    denoiser, x: torch.Tensor, sigmas: torch.Tensor, *, generator: Generator = None, callback: Callback = None,
    s_churn: float = 0.0, s_tmin: float = 0.0, s_tmax: float = math.inf, s_noise: float = 1.0,
) -> torch.Tensor:
    """Heun's 2nd-order method, Euler on the last step to sigma = 0 (Karras et al. 2022, Alg. 2, with S_churn)."""
    steps = len(sigmas) - 1
    for i in range(steps):
        sigma_next = sigmas[i + 1]
        x, sigma_hat = churn(x, sigmas[i], steps, generator, s_churn=s_churn, s_tmin=s_tmin, s_tmax=s_tmax,
                             s_noise=s_noise)
        x0_hat = denoiser(x, sigma_batch(sigma_hat, x))
        report(callback, i, sigmas, x, x0_hat)
        d = to_d(x, sigma_batch(sigma_hat, x), x0_hat)
        dt = (sigma_next - sigma_hat).to(x.dtype)
        x_euler = x + dt * d  # Alg. 2 line 8
        if sigma_next == 0:
            x = x_euler
        else:
            d_next = to_d(x_euler, sigma_batch(sigma_next, x), denoiser(x_euler, sigma_batch(sigma_next, x)))
            x = x + dt * (d + d_next) / 2  # Alg. 2 line 11: trapezoidal rule
    return x
