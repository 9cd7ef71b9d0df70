"""Descending noise-level grids (VE sigmas ending in 0) built in one place for every sampler."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Literal

import torch

from difflab.errors import DifflabError
from difflab.schedules import DiscreteSchedule

GridKind = Literal["linspace", "leading", "trailing", "karras", "log_snr", "respaced"]
GRIDS: tuple[GridKind, ...] = ("linspace", "leading", "trailing", "karras", "log_snr", "respaced")


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


def log_snr_sigmas(sigma_min: float, sigma_max: float, n: int) -> torch.Tensor:
    # uniform in lambda = log(alpha^2/sigma_vp^2) = -2 log sigma (Lu et al. 2022, Sec. 3.3 "uniform logSNR")
    return torch.linspace(math.log(sigma_max), math.log(sigma_min), n, dtype=torch.float64).exp()


def respaced_timesteps(timesteps: int, sections: str) -> torch.Tensor:
    """Nichol & Dhariwal 2021 respacing (improved-diffusion `space_timesteps`), descending.

    "10,15,20" splits the chain into 3 equal sections and takes 10, 15, 20 evenly spaced timesteps in each
    (both ends of a section when it has 2+ of them); "ddimN" takes every k-th timestep from 0 with the
    stride k that gives exactly N (DDIM's leading spacing).
    """
    if sections.startswith("ddim"):
        n = _count(sections[4:], sections)
        for stride in range(1, timesteps):
            if len(range(0, timesteps, stride)) == n:
                return torch.arange(0, timesteps, stride).flip(0)
        raise DifflabError(f"--sections {sections}: no integer stride gives exactly {n} of {timesteps} timesteps")
    counts = [_count(c, sections) for c in sections.split(",")]
    size, extra = divmod(timesteps, len(counts))
    chosen, start = [], 0
    for i, count in enumerate(counts):
        length = size + (1 if i < extra else 0)
        if count > length:
            raise DifflabError(f"--sections {sections}: section {i} has {length} timesteps, cannot take {count}")
        stride = (length - 1) / (count - 1) if count > 1 else 1.0
        chosen += [start + round(j * stride) for j in range(count)]
        start += length
    return torch.tensor(chosen).flip(0)


def _count(text: str, sections: str) -> int:
    if not text.strip().isdigit() or int(text) < 1:
        raise DifflabError(f'--sections must be counts like "10,15,20" or "ddimN" with counts >= 1, got {sections!r}')
    return int(text)


def make_grid(
    schedule, n: int, kind: GridKind = "leading", sections: str | None = None, levels: Sequence[float] | None = None,
    renoising: bool = False,
) -> torch.Tensor:
    """A float64 grid of n+1 VE levels, descending from the schedule's noisiest level to 0.

    `schedule` is a DiscreteSchedule, or any levels with sigma_min and sigma_max (an EDM model's), which take the
    sigma-spaced kinds (karras, log_snr) only.

    kind "respaced" takes Nichol & Dhariwal's section counts (default: one section of n), which must add up to n.
    `levels` (n of them) are used as given instead of a kind's spacing, e.g. a consistency model's re-noising levels.
    `renoising`: the levels are a consistency sampler's, for which sigma_min is a wasted evaluation (f(x, sigma_min)
    = x); where the kind's n levels end there (karras, log_snr, leading), the first n of its n + 1 are taken.
    """
    if levels is not None:
        return explicit_grid(schedule, n, levels)
    if renoising and n > 1 and sections is None:
        sigmas = make_grid(schedule, n, kind)
        if float(sigmas[-2]) <= schedule.sigma_min * (1 + 1e-9):
            return append_zero(make_grid(schedule, n + 1, kind)[:-2])
        return sigmas
    if n < 1:
        raise DifflabError(f"steps must be >= 1, got {n}")
    if kind not in GRIDS:
        raise DifflabError(f"grid must be one of {', '.join(GRIDS)}, got {kind!r}")
    if sections is not None and kind != "respaced":
        raise DifflabError(f"--sections applies only to --grid respaced, got --grid {kind}")
    if kind in ("karras", "log_snr"):
        if n == 1:
            return append_zero(torch.tensor([schedule.sigma_max], dtype=torch.float64))
        spacing = karras_sigmas if kind == "karras" else log_snr_sigmas
        return append_zero(spacing(schedule.sigma_min, schedule.sigma_max, n))
    if not isinstance(schedule, DiscreteSchedule):
        raise DifflabError(f"grid {kind!r} spaces the timesteps of a discrete schedule, and this model's noise levels "
                           f"are continuous: use --grid karras or log_snr")
    if n > schedule.timesteps:
        raise DifflabError(f"steps must be <= the schedule's {schedule.timesteps} timesteps, got {n}")
    if kind == "respaced":
        timesteps = respaced_timesteps(schedule.timesteps, sections or str(n))
        if len(timesteps) != n:
            raise DifflabError(f"--sections {sections} gives {len(timesteps)} steps but --steps is {n}")
    else:
        timesteps = spaced_timesteps(schedule.timesteps, n, kind)
    return append_zero(schedule.sigmas[timesteps])


def explicit_grid(schedule, n: int, levels: Sequence[float]) -> torch.Tensor:
    """The grid of n given noise levels, strictly decreasing within the model's [sigma_min, sigma_max], then 0."""
    shown = ",".join(f"{level:g}" for level in levels)
    if len(levels) != n:
        raise DifflabError(f"--sigmas gives {len(levels)} levels but steps is {n}")
    sigmas = torch.tensor(list(levels), dtype=torch.float64)
    if n < 1 or not bool(sigmas.isfinite().all()) or not bool((sigmas[1:] < sigmas[:-1]).all()):
        raise DifflabError(f"--sigmas must be noise levels in strictly decreasing order, got {shown!r}")
    low, high = schedule.sigma_min, schedule.sigma_max
    if float(sigmas[-1]) < low * (1 - 1e-9) or float(sigmas[0]) > high * (1 + 1e-9):
        raise DifflabError(f"--sigmas must lie within the model's noise levels [{low:.6g}, {high:.6g}], got {shown!r}")
    return append_zero(sigmas)


def check_grid(sigmas: torch.Tensor) -> None:
    """Samplers take strictly decreasing grids that end in 0."""
    if sigmas.ndim != 1 or len(sigmas) < 2 or float(sigmas[-1]) != 0.0 or not bool((sigmas[1:] < sigmas[:-1]).all()):
        raise ValueError("a sigma grid must be 1-D, strictly decreasing and end in 0")
    if not math.isfinite(float(sigmas[0])):
        raise ValueError("a sigma grid must be finite")
