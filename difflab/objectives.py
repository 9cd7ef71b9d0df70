"""Training losses as small functions of (denoiser, x0): per-sample values, weighted, never reduced here."""

from __future__ import annotations

import math
from typing import Literal

import torch

from difflab.conditioning import Condition
from difflab.denoiser import Denoiser
from difflab.errors import DifflabError
from difflab.likelihood.vlb import Decoder, vlb_term
from difflab.prediction import training_target, x0_from_output
from difflab.schedules import append_dims

LossKind = Literal["simple", "hybrid", "vlb"]
LOSSES: tuple[LossKind, ...] = ("simple", "hybrid", "vlb")


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
    t_sampler=None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """The random part of a loss for a batch of `shape`: t [B] and eps ~ N(0, I); t ~ U{0..T-1}, or drawn by
    t_sampler.sample(n, generator) (difflab.train.importance) where one is given."""
    if t_sampler is None:
        timestep = torch.randint(0, schedule.timesteps, (shape[0],), generator=generator, device=device)
    else:
        timestep = t_sampler.sample(shape[0], generator).to(device)
    return timestep, torch.randn(shape, generator=generator, dtype=dtype, device=device)


def _network_pass(
    denoiser: Denoiser, x0: torch.Tensor, cond: Condition | None, generator: torch.Generator | None,
    noise: tuple[torch.Tensor, torch.Tensor] | None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor | None]:
    """(timestep, eps, x_t, prediction, v) of one forward of the network on x_t ~ q(x_t | x0)."""
    timestep, eps = noise or draw_noise(denoiser.schedule, tuple(x0.shape), generator, x0.device, x0.dtype)
    x_t = denoiser.schedule.q_sample(x0, timestep, eps)
    prediction, v = denoiser.split(denoiser.net(x_t, timestep.to(x0.dtype), cond))
    return timestep, eps, x_t, prediction, v


def _simple_term(denoiser: Denoiser, x0: torch.Tensor, timestep: torch.Tensor, eps: torch.Tensor,
                 prediction: torch.Tensor, min_snr_gamma: float | None) -> torch.Tensor:
    sigma = denoiser.schedule.sigmas.to(x0.device)[timestep]
    target = training_target(denoiser.prediction, append_dims(sigma.to(x0.dtype), x0.ndim), x0, eps)
    loss = mean_flat((prediction - target) ** 2)
    if min_snr_gamma is not None:
        snr = sigma**-2  # SNR_t = alpha_bar / (1 - alpha_bar) = 1 / sigma^2
        loss = loss * min_snr_weight(snr, min_snr_gamma, denoiser.prediction).to(loss.dtype)
    return loss


def _vlb_estimate(denoiser: Denoiser, x0: torch.Tensor, timestep: torch.Tensor, x_t: torch.Tensor,
                  prediction: torch.Tensor, v: torch.Tensor | None, decoder: Decoder) -> torch.Tensor:
    """T * L_t in bits per dimension [B]: one-sample estimate of L_vlb = sum_t L_t for t ~ U{0..T-1}."""
    schedule = denoiser.schedule
    sigma = append_dims(schedule.sigmas.to(x0.device)[timestep], x0.ndim)
    x = x_t.to(torch.float64) * torch.sqrt(1 + sigma**2)  # VE x = x_t / alpha_t
    x0_hat = x0_from_output(denoiser.prediction, x, sigma, prediction.to(torch.float64))
    bits = mean_flat(vlb_term(schedule, x0, x_t, timestep, x0_hat, v, decoder)) / math.log(2)
    return (schedule.timesteps * bits).to(x0.dtype)


def simple_loss(
    denoiser: Denoiser, x0: torch.Tensor, cond: Condition | None = None, *,
    generator: torch.Generator | None = None, min_snr_gamma: float | None = None,
    noise: tuple[torch.Tensor, torch.Tensor] | None = None,
) -> torch.Tensor:
    """L_simple (Ho et al. 2020, Eq. 14): || target - net(x_t, t) ||^2 with t ~ U{0..T-1}, per sample [B].

    `noise` = (timestep, eps) drawn by the caller (a data-parallel shard of a global draw); else drawn here.
    """
    timestep, eps, _, prediction, _ = _network_pass(denoiser, x0, cond, generator, noise)
    return _simple_term(denoiser, x0, timestep, eps, prediction, min_snr_gamma)


def hybrid_loss(
    denoiser: Denoiser, x0: torch.Tensor, cond: Condition | None = None, *,
    generator: torch.Generator | None = None, min_snr_gamma: float | None = None,
    noise: tuple[torch.Tensor, torch.Tensor] | None = None, vlb_weight: float = 0.001, decoder: Decoder = "discretized",
) -> torch.Tensor:
    """L_hybrid = L_simple + lambda L_vlb (Nichol & Dhariwal 2021, Eq. 16), per sample [B].

    L_vlb (bits/dim, estimated by T * L_t) sees the mean with its gradient stopped, so it trains only the variance
    fraction v (their Sec. 3.1); with lambda = 0.001 and T = 1000 this is improved-diffusion's mse + vb.
    """
    timestep, eps, x_t, prediction, v = _network_pass(denoiser, x0, cond, generator, noise)
    if v is None:
        raise DifflabError("loss 'hybrid' needs a network with learned_variance: true")
    simple = _simple_term(denoiser, x0, timestep, eps, prediction, min_snr_gamma)
    return simple + vlb_weight * _vlb_estimate(denoiser, x0, timestep, x_t, prediction.detach(), v, decoder)


def vlb_loss(
    denoiser: Denoiser, x0: torch.Tensor, cond: Condition | None = None, *,
    generator: torch.Generator | None = None, noise: tuple[torch.Tensor, torch.Tensor] | None = None,
    decoder: Decoder = "discretized",
) -> torch.Tensor:
    """L_vlb = sum_t L_t (Ho et al. 2020, Eq. 5; bits/dim) estimated per sample [B] by T * L_t, without L_T (no
    parameters). For t drawn from an importance distribution p_t, weight it by 1 / (T p_t) (Nichol & Dhariwal 2021,
    Eq. 18)."""
    timestep, _, x_t, prediction, v = _network_pass(denoiser, x0, cond, generator, noise)
    return _vlb_estimate(denoiser, x0, timestep, x_t, prediction, v, decoder)


def training_loss(
    kind: LossKind, denoiser: Denoiser, x0: torch.Tensor, cond: Condition | None = None, *,
    noise: tuple[torch.Tensor, torch.Tensor] | None = None, generator: torch.Generator | None = None,
    min_snr_gamma: float | None = None, vlb_weight: float = 0.001, decoder: Decoder = "discretized",
) -> torch.Tensor:
    """The per-sample loss [B] of the configured kind (TrainConfig.loss)."""
    if kind == "simple":
        return simple_loss(denoiser, x0, cond, generator=generator, min_snr_gamma=min_snr_gamma, noise=noise)
    if kind == "hybrid":
        return hybrid_loss(denoiser, x0, cond, generator=generator, min_snr_gamma=min_snr_gamma, noise=noise,
                           vlb_weight=vlb_weight, decoder=decoder)
    if kind == "vlb":
        return vlb_loss(denoiser, x0, cond, generator=generator, noise=noise, decoder=decoder)
    raise DifflabError(f"loss must be one of {', '.join(LOSSES)}, got {kind!r}")
