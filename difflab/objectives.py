"""Training losses as small functions of (denoiser, x0): per-sample values, weighted, never reduced here."""

from __future__ import annotations

import torch

from difflab.denoiser import Denoiser
from difflab.prediction import training_target
from difflab.schedules import append_dims


def mean_flat(x: torch.Tensor) -> torch.Tensor:
    """Mean over all but the batch dimension."""
    return x.flatten(1).mean(1)


def min_snr_weight(snr: torch.Tensor, gamma: float, prediction: str) -> torch.Tensor:
    # Hang et al. 2023, Eq. 9: w_t = min(SNR_t, gamma) in x0 terms; /SNR for eps targets, /(SNR+1) for v targets
    clipped = snr.clamp(max=gamma)
    if prediction == "eps":
        return clipped / snr
    if prediction == "v":
        return clipped / (snr + 1)
    return clipped


def draw_noise(
    schedule, shape: tuple[int, ...], generator: torch.Generator | None, device=None, dtype=torch.float32,
) -> tuple[torch.Tensor, torch.Tensor]:
    """The random part of L_simple for a batch of `shape`: t ~ U{0..T-1} [B] and eps ~ N(0, I)."""
    timestep = torch.randint(0, schedule.timesteps, (shape[0],), generator=generator, device=device)
    return timestep, torch.randn(shape, generator=generator, dtype=dtype, device=device)


def simple_loss(
    denoiser: Denoiser, x0: torch.Tensor, labels: torch.Tensor | None = None, *,
    generator: torch.Generator | None = None, min_snr_gamma: float | None = None,
    noise: tuple[torch.Tensor, torch.Tensor] | None = None,
) -> torch.Tensor:
    """L_simple (Ho et al. 2020, Eq. 14): || target - net(x_t, t) ||^2 with t ~ U{0..T-1}, per sample [B].

    `noise` = (timestep, eps) drawn by the caller (a data-parallel shard of a global draw); else drawn here.
    """
    schedule = denoiser.schedule
    timestep, eps = noise or draw_noise(schedule, tuple(x0.shape), generator, x0.device, x0.dtype)
    x_t = schedule.q_sample(x0, timestep, eps)
    sigma = schedule.sigmas.to(x0.device)[timestep]
    target = training_target(denoiser.prediction, append_dims(sigma.to(x0.dtype), x0.ndim), x0, eps)
    loss = mean_flat((denoiser.net(x_t, timestep.to(x0.dtype), labels) - target) ** 2)
    if min_snr_gamma is not None:
        snr = sigma**-2  # SNR_t = alpha_bar / (1 - alpha_bar) = 1 / sigma^2
        loss = loss * min_snr_weight(snr, min_snr_gamma, denoiser.prediction).to(loss.dtype)
    return loss
