"""DDPM ancestral sampling and DDIM with eta, over any grid of levels (full chain or strided)."""

from __future__ import annotations

from typing import Literal

import torch

from difflab.samplers import register
from difflab.samplers.common import Callback, Generator, ancestral_step, randn_like, report, sigma_batch


@register("ddpm", order=1, stochastic=True, nfe_per_step=1)
@torch.no_grad()
def sample_ddpm(
    denoiser, x: torch.Tensor, sigmas: torch.Tensor, *, generator: Generator = None, callback: Callback = None,
    variance: Literal["beta_tilde", "beta"] = "beta_tilde",
) -> torch.Tensor:
    """DDPM ancestral sampling from the posterior q(x_s | x_t, x0_hat) (Ho et al. 2020, Alg. 2)."""
    for i in range(len(sigmas) - 1):
        sigma, sigma_next = sigmas[i], sigmas[i + 1]
        x0_hat = denoiser(x, sigma_batch(sigma, x))
        report(callback, i, sigmas, x, x0_hat)
        ratio = (sigma_next / sigma) ** 2
        # Ho et al. 2020, Eq. 7 in VE coordinates: mu_tilde = x0 + (sigma_s^2 / sigma_t^2) (x_t - x0)
        x = x0_hat + ratio * (x - x0_hat)
        if sigma_next > 0:
            if variance == "beta_tilde":
                # beta_tilde / alpha_bar_s = sigma_s^2 (1 - sigma_s^2 / sigma_t^2)
                std = sigma_next * torch.sqrt(1 - ratio)
            else:
                # beta / alpha_bar_s = (sigma_t^2 - sigma_s^2)(1 + sigma_s^2) / (1 + sigma_t^2)
                std = torch.sqrt((sigma**2 - sigma_next**2) * (1 + sigma_next**2) / (1 + sigma**2))
            x = x + std.to(x.dtype) * randn_like(x, generator)
    return x


@register("ddim", order=1, stochastic=False, nfe_per_step=1)
@torch.no_grad()
def sample_ddim(
    denoiser, x: torch.Tensor, sigmas: torch.Tensor, *, generator: Generator = None, callback: Callback = None,
    eta: float = 0.0,
) -> torch.Tensor:
    """DDIM (Song et al. 2021, Eq. 12); eta=0 is deterministic, eta=1 equals DDPM on the same grid."""
    for i in range(len(sigmas) - 1):
        sigma, sigma_next = sigmas[i], sigmas[i + 1]
        x0_hat = denoiser(x, sigma_batch(sigma, x))
        report(callback, i, sigmas, x, x0_hat)
        sigma_down, sigma_up = ancestral_step(sigma, sigma_next, eta)
        eps_hat = (x - x0_hat) / sigma.to(x.dtype)
        # x_s / alpha_s = x0_hat + sqrt(sigma_s^2 - ddim_std^2) eps_hat + ddim_std z   (all divided by alpha_s)
        x = x0_hat + sigma_down.to(x.dtype) * eps_hat
        if sigma_up > 0:
            x = x + sigma_up.to(x.dtype) * randn_like(x, generator)
    return x
