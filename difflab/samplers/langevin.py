"""Langevin dynamics: the step shared with the predictor-corrector sampler, and annealed Langevin dynamics."""

from __future__ import annotations

import torch

from difflab.samplers import register
from difflab.samplers.common import Callback, Generator, randn_like, report, sigma_batch
from difflab.schedules import append_dims


def langevin_step(x: torch.Tensor, score: torch.Tensor, step: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
    # x <- x + step * grad log p(x) + sqrt(2 step) z  (Song et al. 2021, Alg. 4 line 6; step may be per sample [B])
    step = append_dims(torch.as_tensor(step, dtype=x.dtype, device=x.device).expand(x.shape[0]), x.ndim)
    return x + step * score + torch.sqrt(2 * step) * z


def score_at(denoiser, x: torch.Tensor, sigma: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(x0_hat, score) at level sigma; score = (x0_hat - x) / sigma^2 (Tweedie, EDM Eq. 3)."""
    x0_hat = denoiser(x, sigma_batch(sigma, x))
    return x0_hat, (x0_hat - x) / sigma.to(x.dtype) ** 2


@register("annealed_langevin", order=1, stochastic=True, nfe_per_step=1)
@torch.no_grad()
def sample_annealed_langevin(
    denoiser, x: torch.Tensor, sigmas: torch.Tensor, *, generator: Generator = None, callback: Callback = None,
    langevin_steps: int = 1, step_size: float = 0.2,
) -> torch.Tensor:
    """Annealed Langevin dynamics over the grid's levels, then a denoising step (Song & Ermon 2019, Alg. 1).

    `langevin_steps` (T) steps at each positive level sigma_i with alpha_i = step_size * sigma_i^2, i.e. the
    paper's epsilon * sigma_i^2 / sigma_L^2 with step_size = epsilon / sigma_L^2 (0.2 for their epsilon = 2e-5,
    sigma_L = 0.01), so the step does not depend on the grid's smallest level. The final
    x0_hat = D(x, sigma_L) removes the remaining noise (Song & Ermon 2020, Sec. 4.3). NFE = T per level + 1.
    """
    sigma_last = sigmas[-2]
    for i in range(len(sigmas) - 1):
        sigma = sigmas[i]
        alpha = step_size * sigma**2
        for _ in range(langevin_steps):
            x0_hat, score = score_at(denoiser, x, sigma)
            # Alg. 1 line 6: x_t = x_{t-1} + alpha_i / 2 * s(x_{t-1}, sigma_i) + sqrt(alpha_i) z_t
            x = langevin_step(x, score, alpha / 2, randn_like(x, generator))
        report(callback, i, sigmas, x, x0_hat)
    return denoiser(x, sigma_batch(sigma_last, x))
