"""Training losses as small functions of (denoiser, x0): per-sample values, weighted, never reduced here."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import torch

from difflab.conditioning import Condition
from difflab.denoiser import Denoiser, EDMConfig, edm_sigma
from difflab.errors import DifflabError
from difflab.likelihood.vlb import Decoder, vlb_term
from difflab.schedules import append_dims

LossKind = Literal["simple", "hybrid", "vlb", "edm"]
LOSSES: tuple[LossKind, ...] = ("simple", "hybrid", "vlb", "edm")


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
    t_sampler=None, max_timestep: int | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """The random part of a VP loss for a batch of `shape`: t [B] and eps ~ N(0, I); t ~ U{0..T-1} (or
    U{0..max_timestep-1}: a refiner's levels), or drawn by t_sampler.sample(n, generator) (difflab.train.importance)
    where one is given."""
    if t_sampler is None:
        high = schedule.timesteps if max_timestep is None else max_timestep
        timestep = torch.randint(0, high, (shape[0],), generator=generator, device=device)
    else:
        timestep = t_sampler.sample(shape[0], generator).to(device)
    return timestep, torch.randn(shape, generator=generator, dtype=dtype, device=device)


def draw_edm_noise(
    config: EDMConfig, shape: tuple[int, ...], generator: torch.Generator | None, device=None, dtype=torch.float32,
) -> tuple[torch.Tensor, torch.Tensor]:
    """The random part of the EDM loss: sigma [B] (float64) with ln sigma ~ N(P_mean, P_std^2), and eps ~ N(0, I)."""
    sigma = edm_sigma(shape[0], config, generator, device)
    return sigma, torch.randn(shape, generator=generator, dtype=dtype, device=device)


@dataclass(frozen=True)
class NoisyPass:
    """One forward of D's network on x = x0 + sigma eps (VE coordinates)."""

    sigma: torch.Tensor  # [B] float64
    eps: torch.Tensor
    x: torch.Tensor
    output: torch.Tensor  # F's output (the prediction of a VP model)
    v: torch.Tensor | None  # the learned variance fraction, if any


def noisy_pass(denoiser: Denoiser, x0: torch.Tensor, sigma: torch.Tensor, eps: torch.Tensor,
               cond: Condition | None) -> NoisyPass:
    x = x0 + append_dims(sigma.to(x0.dtype), x0.ndim) * eps  # x = x_t / alpha_t = x0 + sigma eps
    output, v = denoiser.network_output(x, sigma, cond)
    return NoisyPass(sigma, eps, x, output, v)


def _vp_pass(denoiser: Denoiser, x0: torch.Tensor, cond: Condition | None, generator: torch.Generator | None,
             noise: tuple[torch.Tensor, torch.Tensor] | None) -> tuple[torch.Tensor, NoisyPass]:
    """(timestep, the pass) at sigma_t of t ~ U{0..T-1} (or the given noise) on the denoiser's VP schedule."""
    if denoiser.precond.kind != "vp":
        raise DifflabError("losses simple, hybrid and vlb train a vp model (a discrete schedule); use loss 'edm'")
    timestep, eps = noise or draw_noise(denoiser.schedule, tuple(x0.shape), generator, x0.device, x0.dtype)
    sigma = denoiser.schedule.sigmas.to(x0.device)[timestep]
    return timestep, noisy_pass(denoiser, x0, sigma, eps, cond)


def _simple_term(denoiser: Denoiser, x0: torch.Tensor, step: NoisyPass, min_snr_gamma: float | None) -> torch.Tensor:
    target = denoiser.precond.target(x0, step.sigma, step.eps)
    loss = mean_flat((step.output - target) ** 2)
    if min_snr_gamma is not None:
        snr = step.sigma**-2  # SNR_t = alpha_bar / (1 - alpha_bar) = 1 / sigma^2
        loss = loss * min_snr_weight(snr, min_snr_gamma, denoiser.prediction).to(loss.dtype)
    return loss


def _vlb_estimate(denoiser: Denoiser, x0: torch.Tensor, timestep: torch.Tensor, step: NoisyPass,
                  output: torch.Tensor, decoder: Decoder) -> torch.Tensor:
    """T * L_t in bits per dimension [B]: one-sample estimate of L_vlb = sum_t L_t for t ~ U{0..T-1}."""
    schedule = denoiser.schedule
    sigma = append_dims(step.sigma, x0.ndim)
    x = step.x.to(torch.float64)
    x0_hat = denoiser.precond.x0(x, step.sigma, output.to(torch.float64))
    x_t = x / torch.sqrt(1 + sigma**2)  # VP x_t = alpha_t x
    bits = mean_flat(vlb_term(schedule, x0, x_t, timestep, x0_hat, step.v, decoder)) / math.log(2)
    return (schedule.timesteps * bits).to(x0.dtype)


def simple_loss(
    denoiser: Denoiser, x0: torch.Tensor, cond: Condition | None = None, *,
    generator: torch.Generator | None = None, min_snr_gamma: float | None = None,
    noise: tuple[torch.Tensor, torch.Tensor] | None = None,
) -> torch.Tensor:
    """L_simple (Ho et al. 2020, Eq. 14): || target - F(x_t, t) ||^2 with t ~ U{0..T-1}, per sample [B].

    `noise` = (timestep, eps) drawn by the caller (a data-parallel shard of a global draw); else drawn here.
    """
    _, step = _vp_pass(denoiser, x0, cond, generator, noise)
    return _simple_term(denoiser, x0, step, min_snr_gamma)


def hybrid_loss(
    denoiser: Denoiser, x0: torch.Tensor, cond: Condition | None = None, *,
    generator: torch.Generator | None = None, min_snr_gamma: float | None = None,
    noise: tuple[torch.Tensor, torch.Tensor] | None = None, vlb_weight: float = 0.001, decoder: Decoder = "discretized",
) -> torch.Tensor:
    """L_hybrid = L_simple + lambda L_vlb (Nichol & Dhariwal 2021, Eq. 16), per sample [B].

    L_vlb (bits/dim, estimated by T * L_t) sees the mean with its gradient stopped, so it trains only the variance
    fraction v (their Sec. 3.1); with lambda = 0.001 and T = 1000 this is improved-diffusion's mse + vb.
    """
    timestep, step = _vp_pass(denoiser, x0, cond, generator, noise)
    if step.v is None:
        raise DifflabError("loss 'hybrid' needs a network with learned_variance: true")
    simple = _simple_term(denoiser, x0, step, min_snr_gamma)
    return simple + vlb_weight * _vlb_estimate(denoiser, x0, timestep, step, step.output.detach(), decoder)


def vlb_loss(
    denoiser: Denoiser, x0: torch.Tensor, cond: Condition | None = None, *,
    generator: torch.Generator | None = None, noise: tuple[torch.Tensor, torch.Tensor] | None = None,
    decoder: Decoder = "discretized",
) -> torch.Tensor:
    """L_vlb = sum_t L_t (Ho et al. 2020, Eq. 5; bits/dim) estimated per sample [B] by T * L_t, without L_T (no
    parameters). For t drawn from an importance distribution p_t, weight it by 1 / (T p_t) (Nichol & Dhariwal 2021,
    Eq. 18)."""
    timestep, step = _vp_pass(denoiser, x0, cond, generator, noise)
    return _vlb_estimate(denoiser, x0, timestep, step, step.output, decoder)


def edm_loss(
    denoiser: Denoiser, x0: torch.Tensor, cond: Condition | None = None, *,
    generator: torch.Generator | None = None, noise: tuple[torch.Tensor, torch.Tensor] | None = None,
) -> torch.Tensor:
    """EDM's loss (Karras et al. 2022, Eq. 8 with Table 1): lambda(sigma) ||D(x0 + sigma eps, sigma) - x0||^2 with
    ln sigma ~ N(P_mean, P_std^2) and lambda = 1 / c_out^2, per sample [B]; `noise` = (sigma, eps) drawn by the
    caller, else here. In F's output space this is || F - (x0 - c_skip x) / c_out ||^2."""
    if denoiser.precond.kind != "edm":
        raise DifflabError("loss 'edm' trains an edm model: set precond.kind to edm")
    sigma, eps = noise or draw_edm_noise(denoiser.precond.config, tuple(x0.shape), generator, x0.device, x0.dtype)
    step = noisy_pass(denoiser, x0, sigma, eps, cond)
    return mean_flat((step.output - denoiser.precond.target(x0, sigma, eps)) ** 2)


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
    if kind == "edm":
        return edm_loss(denoiser, x0, cond, generator=generator, noise=noise)
    raise DifflabError(f"loss must be one of {', '.join(LOSSES)}, got {kind!r}")
