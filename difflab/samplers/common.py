"""Pieces shared by samplers: step reports, interruption, noise draws, the ancestral split and EDM's churn."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch

from difflab.schedules import append_dims

Generator = torch.Generator | Sequence[torch.Generator] | None


class Interrupted(Exception):
    """Raised by a callback to stop a sampler between steps."""


@dataclass(frozen=True)
class StepInfo:
    """What a sampler reports after step i from sigma to sigma_next."""

    i: int
    sigma: float
    sigma_next: float
    x: torch.Tensor
    x0_hat: torch.Tensor
    nfe: int | None = None  # network evaluations so far, from samplers whose count is not fixed by the grid
    rounds: int | None = None  # sequential network calls so far, from parallel samplers (paradigms_*)


Callback = Callable[[StepInfo], None] | None


def randn_like(x: torch.Tensor, generator: Generator) -> torch.Tensor:
    """Standard normal noise shaped like x; a list of generators draws each sample from its own (seed per image)."""
    if generator is None or isinstance(generator, torch.Generator):
        return torch.randn(x.shape, generator=generator, dtype=x.dtype, device=x.device)
    if len(generator) != x.shape[0]:
        raise ValueError(f"got {len(generator)} generators for a batch of {x.shape[0]}")
    return torch.stack([torch.randn(x.shape[1:], generator=g, dtype=x.dtype, device=x.device) for g in generator])


def add_noise(x: torch.Tensor, std: torch.Tensor | float, generator: Generator) -> torch.Tensor:
    """x + std * z with z ~ N(0, I) from the generator; no draw when std is 0 (e.g. on the last step to sigma = 0)."""
    if float(std) == 0.0:
        return x
    return x + torch.as_tensor(std, dtype=x.dtype, device=x.device) * randn_like(x, generator)


def sigma_batch(sigma: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """A grid entry as a per-sample level [B] in x's dtype."""
    return sigma.to(x.dtype).expand(x.shape[0])


def to_d(x: torch.Tensor, sigma: torch.Tensor, x0_hat: torch.Tensor) -> torch.Tensor:
    # dx/dsigma = (x - D(x, sigma)) / sigma  (Karras et al. 2022, Eq. 3 with sigma(t) = t)
    return (x - x0_hat) / append_dims(sigma, x.ndim)


def ancestral_step(sigma: torch.Tensor, sigma_next: torch.Tensor,
                   eta: float = 1.0) -> tuple[torch.Tensor, torch.Tensor]:
    """Split the step sigma -> sigma_next into a deterministic part to sigma_down and fresh noise of std sigma_up.

    sigma_up = eta * sigma_next * sqrt(1 - sigma_next^2/sigma^2) is DDIM's std (Song et al. 2021, Eq. 16) divided
    by alpha_next; sigma_down = sqrt(sigma_next^2 - sigma_up^2).
    """
    sigma_up = torch.minimum(sigma_next, eta * sigma_next * torch.sqrt(1 - (sigma_next / sigma) ** 2))
    sigma_down = torch.sqrt(sigma_next**2 - sigma_up**2)
    return sigma_down, sigma_up


def churn(
    x: torch.Tensor, sigma: torch.Tensor, steps: int, generator: Generator, *,
    s_churn: float, s_tmin: float, s_tmax: float, s_noise: float,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Raise the level of x from sigma to sigma_hat = sigma (1 + gamma) with fresh noise; gamma = 0 adds none.

    Karras et al. 2022, Alg. 2 lines 4-6: gamma = min(S_churn / N, sqrt(2) - 1) for S_tmin <= sigma <= S_tmax,
    x_hat = x + sqrt(sigma_hat^2 - sigma^2) * S_noise * z.
    """
    gamma = min(s_churn / steps, 2**0.5 - 1) if s_tmin <= float(sigma) <= s_tmax else 0.0
    if gamma == 0.0:
        return x, sigma
    sigma_hat = sigma * (1 + gamma)
    return add_noise(x, s_noise * torch.sqrt(sigma_hat**2 - sigma**2), generator), sigma_hat


def report(
    callback: Callback, i: int, sigmas: torch.Tensor, x: torch.Tensor, x0_hat: torch.Tensor, nfe: int | None = None,
    rounds: int | None = None,
) -> None:
    if callback is not None:
        callback(StepInfo(i, float(sigmas[i]), float(sigmas[i + 1]), x, x0_hat, nfe, rounds))


def ancestral(denoiser, x: torch.Tensor, sigmas: torch.Tensor, generator: Generator, callback: Callback, eta: float,
              s_noise: float, step: Callable[[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor],
              ) -> torch.Tensor:
    """k-diffusion's ancestral form of a solver: `step(x, x0_hat, sigma, sigma_down)` to sigma_down (x0_hat itself
    where sigma_down is 0), then fresh noise of std s_noise * sigma_up (ancestral_step)."""
    for i in range(len(sigmas) - 1):
        sigma = sigmas[i]
        x0_hat = denoiser(x, sigma_batch(sigma, x))
        report(callback, i, sigmas, x, x0_hat)
        sigma_down, sigma_up = ancestral_step(sigma, sigmas[i + 1], eta)
        x = x0_hat if sigma_down == 0 else step(x, x0_hat, sigma, sigma_down)
        x = add_noise(x, s_noise * sigma_up, generator)
    return x
