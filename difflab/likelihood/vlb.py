"""The variational bound of a discrete DDPM chain, term by term, and -log p(x0) bounded by the whole chain.

Timesteps are 0-based: table index t is Ho et al.'s step t + 1. Terms are computed in VP coordinates from the
float64 schedule tables, in nats per element:
  L_T  = KL(q(x_T | x0) || N(0, I))                                       (Ho et al. 2020, Eq. 5)
  L_t  = KL(q(x_{t-1} | x_t, x0) || p_theta(x_{t-1} | x_t)),  t >= 1    (Eq. 5, Eq. 7 for q)
  L_0  = -log p_theta(x0 | x_1)  (the discretized decoder, Eq. 13, or a Gaussian density for continuous data)
p_theta(x_{t-1} | x_t) = N(mu_tilde(x_t, x0_hat), Sigma_t) with the learned or fixed variance of
reverse_log_variance.
"""

from __future__ import annotations

import math
from typing import Literal

import torch
from tqdm import tqdm

from difflab.likelihood.gaussian import discretized_gaussian_log_likelihood, gaussian_log_density, normal_kl
from difflab.schedules import DiscreteSchedule, append_dims

Decoder = Literal["discretized", "gaussian"]


def variance_bounds(schedule: DiscreteSchedule) -> tuple[torch.Tensor, torch.Tensor]:
    """(log beta_t, log beta_tilde_t) tables [T]; beta_tilde_0 = 0 is replaced by beta_tilde_1 (improved-diffusion's
    posterior_log_variance_clipped), so the decoder at t = 0 has a finite variance."""
    beta_tilde = torch.cat([schedule.beta_tilde[1:2], schedule.beta_tilde[1:]])
    return schedule.betas.log(), beta_tilde.log()


def reverse_log_variance(schedule: DiscreteSchedule, timestep: torch.Tensor, v: torch.Tensor | None,
                         ndim: int) -> torch.Tensor:
    """log Sigma_theta(x_t, t) in VP coordinates (float64): beta_tilde_t for a fixed-variance model (v is None), else
    Nichol & Dhariwal 2021, Eq. 15: Sigma = exp(v log beta_t + (1 - v) log beta_tilde_t), v unconstrained."""
    log_beta, log_beta_tilde = (append_dims(table.to(timestep.device)[timestep], ndim)
                                for table in variance_bounds(schedule))
    if v is None:
        return log_beta_tilde
    v = v.to(torch.float64)
    return v * log_beta + (1 - v) * log_beta_tilde


def prior_kl(schedule: DiscreteSchedule, x0: torch.Tensor) -> torch.Tensor:
    """L_T = KL(q(x_T | x0) || N(0, I)) per element: q(x_T | x0) = N(sqrt(alpha_bar_T) x0, 1 - alpha_bar_T) (Eq. 4)."""
    alpha_bar = schedule.alpha_bar[-1].item()
    x0 = x0.to(torch.float64)
    return normal_kl(math.sqrt(alpha_bar) * x0, torch.full_like(x0, math.log1p(-alpha_bar)),
                     torch.zeros_like(x0), torch.zeros_like(x0))


def vlb_term(
    schedule: DiscreteSchedule, x0: torch.Tensor, x_t: torch.Tensor, timestep: torch.Tensor, x0_hat: torch.Tensor,
    v: torch.Tensor | None, decoder: Decoder = "discretized",
) -> torch.Tensor:
    """L_t per element (nats, float64) for each sample's timestep [B]: KL for t >= 1, the decoder NLL L_0 for t = 0.

    x0, x_t are in VP coordinates (x_t = sqrt(alpha_bar) x0 + sqrt(1 - alpha_bar) eps); x0_hat is the model's clean
    estimate at x_t and v its variance fraction (None: fixed beta_tilde).
    """
    ndim = x0.ndim
    x0, x_t, x0_hat = x0.to(torch.float64), x_t.to(torch.float64), x0_hat.to(torch.float64)
    c_x0 = append_dims(schedule.posterior_c_x0.to(x0.device)[timestep], ndim)
    c_xt = append_dims(schedule.posterior_c_xt.to(x0.device)[timestep], ndim)
    # Ho et al. 2020, Eq. 7: q(x_{t-1} | x_t, x0) = N(c_x0 x0 + c_xt x_t, beta_tilde_t); the model plugs in x0_hat
    true_mean, model_mean = c_x0 * x0 + c_xt * x_t, c_x0 * x0_hat + c_xt * x_t
    model_log_var = reverse_log_variance(schedule, timestep, v, ndim).expand_as(x0)
    true_log_var = reverse_log_variance(schedule, timestep, None, ndim).expand_as(x0)  # log beta_tilde_t (clipped at 0)
    kl = normal_kl(true_mean, true_log_var, model_mean, model_log_var)
    if decoder == "discretized":
        # Ho et al. 2020, Eq. 13: L_0 = -log of the decoder's mass on x0's 8-bit bin (mean at t = 0 is x0_hat)
        decoder_nll = -discretized_gaussian_log_likelihood(x0, model_mean, 0.5 * model_log_var)
    else:
        decoder_nll = -gaussian_log_density(x0, model_mean, model_log_var)
    return torch.where(append_dims(timestep == 0, ndim), decoder_nll, kl)


@torch.no_grad()
def vlb_nll(
    denoiser, schedule: DiscreteSchedule, x0: torch.Tensor, *, generator: torch.Generator | None = None,
    decoder: Decoder = "discretized", clip: bool = False, progress: bool = False,
) -> torch.Tensor:
    """The bound -log p(x0) <= L_T + sum_{t>=1} L_t + L_0 (Ho et al. 2020, Eq. 5) per sample [B], in nats.

    Every term is a one-sample estimate at a fresh x_t ~ q(x_t | x0) (improved-diffusion's calc_bpd_loop), over all T
    steps. `denoiser` is D(x, sigma) in VE coordinates, optionally with with_variance(x, sigma); `clip` clamps
    x0_hat to [-1, 1] (data known to lie there).
    """
    x0 = x0.to(torch.float64)
    with_variance = getattr(denoiser, "with_variance", None)  # -> (x0_hat, v | None); plain D(x, sigma): v is None
    total = prior_kl(schedule, x0).flatten(1).sum(1)
    for t in tqdm(range(schedule.timesteps - 1, -1, -1), desc="VLB", unit="step", disable=not progress, leave=False):
        timestep = torch.full((x0.shape[0],), t, dtype=torch.long, device=x0.device)
        eps = torch.randn(x0.shape, generator=generator, dtype=x0.dtype, device=x0.device)
        x_t = schedule.q_sample(x0, timestep, eps)
        sigma = schedule.sigmas[t].item()
        sigma_b = torch.full((x0.shape[0],), sigma, dtype=x0.dtype, device=x0.device)
        x = x_t * math.sqrt(1 + sigma**2)  # VE coordinates: x = x_t / alpha_t
        x0_hat, v = with_variance(x, sigma_b) if with_variance is not None else (denoiser(x, sigma_b), None)
        if clip:
            x0_hat = x0_hat.clamp(-1, 1)
        total += vlb_term(schedule, x0, x_t, timestep, x0_hat, v, decoder).flatten(1).sum(1)
    return total


def bits_per_dim(nll: torch.Tensor, dims: int) -> torch.Tensor:
    """nats per sample -> bits per dimension: nll / (D ln 2)."""
    return nll / (dims * math.log(2))
