"""Consistency-model sampling: one evaluation from the prior, or several with re-noising in between."""

from __future__ import annotations

import torch

from difflab.samplers import register
from difflab.samplers.common import Callback, Generator, add_noise, report, sigma_batch


@register("consistency", order=1, stochastic=True, nfe_per_step=1)
@torch.no_grad()
def sample_consistency(
    denoiser, x: torch.Tensor, sigmas: torch.Tensor, *, generator: Generator = None, callback: Callback = None,
) -> torch.Tensor:
    """Consistency sampling (Song et al. 2023, Alg. 1): x0 = f(x, sigma_0), then x0 = f(x0 + sigma_i z, sigma_i)
    at each further level of the grid (one step: sigmas = [sigma_max, 0]; the grid's levels are the re-noising ones).

    Alg. 1 re-noises with std sqrt(sigma_i^2 - sigma_min^2); with f(x, sigma_min) = x the sample at the boundary is
    taken as clean data, so std sigma_i (the VE marginal of clean data) differs by sigma_min^2 / (2 sigma_i).
    """
    x0_hat = x
    for i in range(len(sigmas) - 1):
        if i > 0:
            x = add_noise(x0_hat, sigmas[i], generator)  # x_{tau_n} = x + sigma_n z
        x0_hat = denoiser(x, sigma_batch(sigmas[i], x))  # f(x_{tau_n}, tau_n)
        report(callback, i, sigmas, x, x0_hat)
    return x0_hat
