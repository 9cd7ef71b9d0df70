"""DDPM ancestral sampling, DDIM with eta and Euler ancestral, over any grid of levels (full chain or strided)."""

from __future__ import annotations

from typing import Literal

import torch

from difflab.samplers import register
from difflab.samplers.common import Callback, Generator, add_noise, ancestral_step, report, sigma_batch


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
            x = add_noise(x, std, generator)
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
        x = add_noise(x0_hat + sigma_down.to(x.dtype) * eps_hat, sigma_up, generator)
    return x


@register("euler_ancestral", order=1, stochastic=True, nfe_per_step=1)
def sample_euler_ancestral(
    denoiser, x: torch.Tensor, sigmas: torch.Tensor, *, generator: Generator = None, callback: Callback = None,
    eta: float = 1.0,
) -> torch.Tensor:
    """Euler ancestral (k-diffusion): an Euler step to sigma_down plus noise sigma_up; equals DDIM with eta (default 1).

    x + (sigma_down - sigma) (x - x0_hat) / sigma = x0_hat + sigma_down * eps_hat, so in VE coordinates the update
    is DDIM's and is not implemented twice.
    """
    return sample_ddim(denoiser, x, sigmas, generator=generator, callback=callback, eta=eta)
