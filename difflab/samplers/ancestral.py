"""DDPM ancestral sampling, DDIM with eta and Euler ancestral, over any grid of levels (full chain or strided)."""

from __future__ import annotations

from typing import Literal

import torch

from difflab.errors import DifflabError
from difflab.samplers import register
from difflab.samplers.common import (
    Callback, Generator, add_noise, ancestral_step, randn_like, report, sigma_batch,
)


def ddpm_posterior(
    x: torch.Tensor, x0_hat: torch.Tensor, v: torch.Tensor | None, sigma: torch.Tensor, sigma_next: torch.Tensor,
    variance: str | None,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """(mean, variance) of the DDPM step sigma -> sigma_next in VE coordinates; variance None on the step to 0.

    v is the learned-variance fraction (or None); variance "beta" picks the upper bound, else beta_tilde.
    """
    ratio = (sigma_next / sigma) ** 2
    # Ho et al. 2020, Eq. 7 in VE coordinates: mu_tilde = x0 + (sigma_s^2 / sigma_t^2) (x_t - x0)
    mu_tilde = x0_hat + ratio * (x - x0_hat)
    if sigma_next == 0:
        return mu_tilde, None
    # beta_tilde / alpha_bar_s = sigma_s^2 (1 - sigma_s^2 / sigma_t^2)
    small = sigma_next**2 * (1 - ratio)
    # beta / alpha_bar_s = (sigma_t^2 - sigma_s^2)(1 + sigma_s^2) / (1 + sigma_t^2)
    large = (sigma**2 - sigma_next**2) * (1 + sigma_next**2) / (1 + sigma**2)
    if v is not None:
        # Nichol & Dhariwal 2021, Eq. 15 between this step's bounds (their Sec. 4 rule on a respaced grid)
        return mu_tilde, torch.exp(v * large.log() + (1 - v) * small.log())
    return mu_tilde, large if variance == "beta" else small


@register("ddpm", order=1, stochastic=True, nfe_per_step=1)
@torch.no_grad()
def sample_ddpm(
    denoiser, x: torch.Tensor, sigmas: torch.Tensor, *, generator: Generator = None, callback: Callback = None,
    variance: Literal["learned", "beta_tilde", "beta"] | None = None,
) -> torch.Tensor:
    """DDPM ancestral sampling from the posterior q(x_s | x_t, x0_hat) (Ho et al. 2020, Alg. 2).

    variance: None (default) takes the model's learned variance where its with_variance(x, sigma) returns v and
    beta_tilde otherwise; "beta_tilde" or "beta" fixes it even for a learned-variance model; "learned" requires v.
    A denoiser with mean_shift(x, sigma, sigma_next, variance) (ancestral classifier guidance, difflab.guidance)
    has the mean of each noisy step moved by it.
    """
    if variance not in (None, "learned", "beta_tilde", "beta"):
        raise DifflabError(f"--variance must be learned, beta_tilde or beta, got {variance!r}")
    mean_shift = getattr(denoiser, "mean_shift", None)
    with_variance = getattr(denoiser, "with_variance", None) if variance in (None, "learned") else None
    for i in range(len(sigmas) - 1):
        sigma, sigma_next = sigmas[i], sigmas[i + 1]
        sigma_b = sigma_batch(sigma, x)
        x0_hat, v = with_variance(x, sigma_b) if with_variance is not None else (denoiser(x, sigma_b), None)
        if variance == "learned" and v is None:
            raise DifflabError("--variance learned needs a model trained with learned variance (--loss hybrid or vlb)")
        report(callback, i, sigmas, x, x0_hat)
        mu_tilde, var = ddpm_posterior(x, x0_hat, v, sigma, sigma_next, variance)
        if var is not None:
            if mean_shift is not None:
                # Dhariwal & Nichol 2021, Alg. 1: mu + s Sigma grad log p(y | x_t), the gradient taken at x_t
                mu_tilde = mu_tilde + mean_shift(x, sigma_b, sigma_batch(sigma_next, x), var)
            x = mu_tilde + var.sqrt().to(x.dtype) * randn_like(x, generator)
        else:
            x = mu_tilde
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
