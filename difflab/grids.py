"""Descending noise-level grids (VE sigmas ending in 0) built in one place for every sampler."""

from __future__ import annotations

import math
from typing import Literal

import torch

from difflab.errors import DifflabError
from difflab.schedules import DiscreteSchedule

GridKind = Literal["linspace", "leading", "trailing", "karras"]
GRIDS: tuple[GridKind, ...] = ("linspace", "leading", "trailing", "karras")


def append_zero(sigmas: torch.Tensor) -> torch.Tensor:
    return torch.cat([sigmas, sigmas.new_zeros(1)])


def spaced_timesteps(timesteps: int, n: int, spacing: Literal["linspace", "leading", "trailing"]) -> torch.Tensor:
    """n distinct integer timesteps in descending order, spaced as in Lin et al. 2024, Table 2."""
    if spacing == "linspace":
        ts = torch.linspace(0, timesteps - 1, n, dtype=torch.float64).round()
    elif spacing == "leading":
        ts = torch.arange(n, dtype=torch.float64) * (timesteps // n)
    else:
        ts = (torch.arange(timesteps, 0, -timesteps / n, dtype=torch.float64).round() - 1).flip(0)
    return ts.long().flip(0)


def karras_sigmas(sigma_min: float, sigma_max: float, n: int, rho: float = 7.0) -> torch.Tensor:
    # Karras et al. 2022, Eq. 5: sigma_i = (sigma_max^(1/rho) + i/(n-1) (sigma_min^(1/rho) - sigma_max^(1/rho)))^rho
    ramp = torch.linspace(0, 1, n, dtype=torch.float64)
    inv_min, inv_max = sigma_min ** (1 / rho), sigma_max ** (1 / rho)
    return (inv_max + ramp * (inv_min - inv_max)) ** rho


def make_grid(schedule: DiscreteSchedule, n: int, kind: GridKind = "leading") -> torch.Tensor:
    """A float64 grid of n+1 VE levels, descending from the schedule's noisiest level to 0."""
    if n < 1:
        raise DifflabError(f"steps must be >= 1, got {n}")
    if kind == "karras":
        if n == 1:
            return append_zero(torch.tensor([schedule.sigma_max], dtype=torch.float64))
        return append_zero(karras_sigmas(schedule.sigma_min, schedule.sigma_max, n))
    if kind not in GRIDS:
        raise DifflabError(f"grid must be one of {', '.join(GRIDS)}, got {kind!r}")
    if n > schedule.timesteps:
        raise DifflabError(f"steps must be <= the schedule's {schedule.timesteps} timesteps, got {n}")
    return append_zero(schedule.sigmas[spaced_timesteps(schedule.timesteps, n, kind)])


def check_grid(sigmas: torch.Tensor) -> None:
    """Samplers take strictly decreasing grids that end in 0."""
    if sigmas.ndim != 1 or len(sigmas) < 2 or float(sigmas[-1]) != 0.0 or not bool((sigmas[1:] < sigmas[:-1]).all()):
        raise ValueError("a sigma grid must be 1-D, strictly decreasing and end in 0")
    if not math.isfinite(float(sigmas[0])):
        raise ValueError("a sigma grid must be finite")
