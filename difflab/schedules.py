"""Discrete variance-preserving noise schedules as float64 tables over integer timesteps.

x_t = alpha_t * x0 + sigma_t * eps with alpha_t = sqrt(alpha_bar_t), sigma_t = sqrt(1 - alpha_bar_t).
This is the only module that uses that VP pair; everywhere else `sigma` is the variance-exploding level
sigma = sqrt((1 - alpha_bar) / alpha_bar) of x / alpha_t, and samplers work in those coordinates.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import torch

from difflab.errors import DifflabError

ScheduleKind = Literal["linear", "cosine", "sigmoid", "scaled_linear"]
MAX_BETA = 0.999


@dataclass(frozen=True)
class ScheduleConfig:
    kind: ScheduleKind = "linear"
    timesteps: int = 1000
    beta_start: float = 1e-4
    beta_end: float = 0.02

    def __post_init__(self) -> None:
        if self.kind not in ("linear", "cosine", "sigmoid", "scaled_linear"):
            raise DifflabError(f"schedule.kind must be linear, cosine, sigmoid or scaled_linear, got {self.kind!r}")
        if self.timesteps < 2:
            raise DifflabError(f"schedule.timesteps must be >= 2, got {self.timesteps}")
        if not 0 < self.beta_start < self.beta_end < 1:
            raise DifflabError("schedule: need 0 < beta_start < beta_end < 1")


def linear_betas(timesteps: int, beta_start: float, beta_end: float) -> torch.Tensor:
    # Ho et al. 2020, Sec. 4: beta_t linear from 1e-4 to 0.02 (given for T=1000)
    return torch.linspace(beta_start, beta_end, timesteps, dtype=torch.float64)


def scaled_linear_betas(timesteps: int, beta_start: float, beta_end: float) -> torch.Tensor:
    # latent diffusion: sqrt(beta) linear in t
    return torch.linspace(beta_start**0.5, beta_end**0.5, timesteps, dtype=torch.float64) ** 2


def betas_from_alpha_bar(alpha_bar: torch.Tensor) -> torch.Tensor:
    """beta_t = 1 - alpha_bar_t / alpha_bar_{t-1} for a table alpha_bar[0..T] with alpha_bar[0] = 1, clipped."""
    return (1 - alpha_bar[1:] / alpha_bar[:-1]).clamp(0, MAX_BETA)


def cosine_betas(timesteps: int, offset: float = 0.008) -> torch.Tensor:
    # Nichol & Dhariwal 2021, Eq. 17: alpha_bar(t) = f(t)/f(0), f(t) = cos^2((t/T + s)/(1 + s) * pi/2)
    t = torch.arange(timesteps + 1, dtype=torch.float64) / timesteps
    f = torch.cos((t + offset) / (1 + offset) * math.pi / 2) ** 2
    return betas_from_alpha_bar(f / f[0])


def sigmoid_betas(timesteps: int, start: float = -3.0, end: float = 3.0, tau: float = 1.0) -> torch.Tensor:
    # Jabri et al. 2022: alpha_bar(t) = (sigmoid(end/tau) - sigmoid((t(end-start)+start)/tau))
    #                                   / (sigmoid(end/tau) - sigmoid(start/tau))
    t = torch.arange(timesteps + 1, dtype=torch.float64) / timesteps
    v_start, v_end = torch.sigmoid(torch.tensor(start / tau)), torch.sigmoid(torch.tensor(end / tau))
    alpha_bar = (v_end - torch.sigmoid((t * (end - start) + start) / tau)) / (v_end - v_start)
    return betas_from_alpha_bar(alpha_bar)


class DiscreteSchedule:
    """Tables over timestep 0..T-1 (float64) and the conversions between timestep and VE sigma."""

    def __init__(self, config: ScheduleConfig = ScheduleConfig()):
        self.config = config
        T = config.timesteps
        if config.kind == "linear":
            betas = linear_betas(T, config.beta_start, config.beta_end)
        elif config.kind == "scaled_linear":
            betas = scaled_linear_betas(T, config.beta_start, config.beta_end)
        elif config.kind == "cosine":
            betas = cosine_betas(T)
        else:
            betas = sigmoid_betas(T)
        self.betas = betas
        self.alpha_bar = torch.cumprod(1 - betas, 0)  # alpha_bar_t = prod_{s<=t} (1 - beta_s)
        self.alpha_bar_prev = torch.cat([torch.ones(1, dtype=torch.float64), self.alpha_bar[:-1]])
        self.alpha = self.alpha_bar.sqrt()
        self.sigma_vp = (1 - self.alpha_bar).sqrt()
        self.sigmas = ((1 - self.alpha_bar) / self.alpha_bar).sqrt()  # VE level sigma_t = sigma_vp / alpha
        self.log_sigmas = self.sigmas.log()
        self.log_snr = self.alpha_bar.log() - torch.log1p(-self.alpha_bar)  # lambda_t = log(alpha^2 / sigma_vp^2)
        # Ho et al. 2020, Eq. 7: beta_tilde_t = (1 - alpha_bar_{t-1}) / (1 - alpha_bar_t) * beta_t
        self.beta_tilde = (1 - self.alpha_bar_prev) / (1 - self.alpha_bar) * betas
        # Eq. 7: mu_tilde = c_x0 * x0 + c_xt * x_t
        self.posterior_c_x0 = self.alpha_bar_prev.sqrt() * betas / (1 - self.alpha_bar)
        self.posterior_c_xt = (1 - betas).sqrt() * (1 - self.alpha_bar_prev) / (1 - self.alpha_bar)

    @property
    def timesteps(self) -> int:
        return self.config.timesteps

    @property
    def sigma_min(self) -> float:
        return float(self.sigmas[0])

    @property
    def sigma_max(self) -> float:
        return float(self.sigmas[-1])

    def q_sample(self, x0: torch.Tensor, timestep: torch.Tensor, eps: torch.Tensor) -> torch.Tensor:
        """x_t = sqrt(alpha_bar_t) x0 + sqrt(1 - alpha_bar_t) eps (Ho et al. 2020, Eq. 4)."""
        alpha = append_dims(self.alpha.to(x0.device)[timestep].to(x0.dtype), x0.ndim)
        sigma_vp = append_dims(self.sigma_vp.to(x0.device)[timestep].to(x0.dtype), x0.ndim)
        return alpha * x0 + sigma_vp * eps

    def timestep_from_sigma(self, sigma: torch.Tensor) -> torch.Tensor:
        """Continuous timestep for VE levels, by linear interpolation of the table in log sigma."""
        log_sigmas = self.log_sigmas.to(sigma.device)
        log_sigma = sigma.to(torch.float64).clamp(self.sigma_min, self.sigma_max).log()
        high = torch.searchsorted(log_sigmas, log_sigma).clamp(1, self.timesteps - 1)
        low = high - 1
        w = (log_sigma - log_sigmas[low]) / (log_sigmas[high] - log_sigmas[low])
        return (low + w).clamp(0, self.timesteps - 1)

    def sigma_from_timestep(self, timestep: torch.Tensor) -> torch.Tensor:
        """VE level of integer timesteps."""
        return self.sigmas.to(timestep.device)[timestep.long()]


def vp_coefficients(sigma: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(alpha, sigma_vp) of a VE level: alpha = 1/sqrt(1+sigma^2), sigma_vp = sigma/sqrt(1+sigma^2)."""
    alpha = torch.rsqrt(1 + sigma**2)
    return alpha, sigma * alpha


def append_dims(x: torch.Tensor, ndim: int) -> torch.Tensor:
    """Append trailing singleton dimensions to a per-sample tensor [B] so it broadcasts against [B, ...]."""
    missing = ndim - x.ndim
    if missing < 0:
        raise ValueError(f"append_dims: input has {x.ndim} dims but target has only {ndim}")
    return x[(...,) + (None,) * missing]
