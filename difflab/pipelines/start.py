"""Where sampling begins other than at prior noise: a start image noised to a level sigma_start (img2img).

As in the AUTOMATIC1111 web UI with k-diffusion: the noise-level grid is cut at sigma_start (its strength), the start
image gets noise of that level, and the same sampler runs over the rest of the grid. A start that is already noisy
at sigma_start (an inverted image, a cascade's upsampled sample) is taken as it is.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch

from difflab.errors import DifflabError


def cut_grid(sigmas: torch.Tensor, sigma_start: float) -> torch.Tensor:
    """sigma_start, then the levels of the descending grid `sigmas` below it."""
    if not 0 < sigma_start <= float(sigmas[0]):
        raise DifflabError(f"sigma_start must lie in (0, {float(sigmas[0]):g}], at or below the grid's noisiest level; "
                           f"got {sigma_start}")
    return torch.cat([sigmas.new_tensor([sigma_start]), sigmas[sigmas < sigma_start]])


@dataclass(frozen=True)
class StrengthLevels:
    """Where an img2img run at a denoising strength begins: build the grid of `steps` steps and start at
    `sigma_start` (one of its levels), or begin at prior noise (`sigma_start` None, strength 1: txt2img), or run
    nothing (`steps` 0, strength 0: the input comes back)."""

    steps: int
    sigma_start: float | None

    @property
    def runs(self) -> bool:
        return self.steps > 0


def img2img_levels(make: Callable[[int], torch.Tensor], steps: int, strength: float,
                   exact_steps: bool = False) -> StrengthLevels:
    """The AUTOMATIC1111 rule (modules/sd_samplers_common.py, setup_img2img_steps) from strength to a start level.

    `make(n)` builds the descending grid of n steps (n + 1 levels ending in 0). By default the grid has `steps` steps
    and the last t_enc + 1 of them run, t_enc = int(min(strength, 0.999) * steps): about strength x steps
    evaluations. With `exact_steps` (A1111's "do exactly the amount of steps the slider specifies") the grid has
    int(steps / min(strength, 0.999)) steps and the last `steps` of them run. Two ends differ from A1111 on purpose:
    strength 0 returns the input untouched (A1111 still runs one step at the lowest level), and strength 1 starts
    from prior noise, so it equals txt2img from the same seed (A1111 adds the input to the noise).
    """
    if not 0 <= strength <= 1:
        raise DifflabError(f"denoising strength must lie in [0, 1], got {strength}")
    if steps < 1:
        raise DifflabError(f"steps must be >= 1, got {steps}")
    if strength == 0:
        return StrengthLevels(0, None)
    if strength == 1:
        return StrengthLevels(steps, None)
    capped = min(strength, 0.999)
    total, t_enc = (int(steps / capped), steps - 1) if exact_steps else (steps, int(capped * steps))
    return StrengthLevels(total, float(make(total)[total - t_enc - 1]))


def check_start(start: torch.Tensor | None, sigma_start: float | None, n: int, shape: tuple[int, ...]) -> None:
    if (start is None) != (sigma_start is None):
        raise DifflabError("start and sigma_start go together: the start state and the noise level it is at")
    if tuple(start.shape[1:]) != tuple(shape) or len(start) not in (1, n):
        raise DifflabError(f"start must be [1 or n={n}, {', '.join(map(str, shape))}] (one start for every sample, "
                           f"or one each), got {list(start.shape)}")


def start_rows(start: torch.Tensor, first: int, size: int) -> torch.Tensor:
    """The start of samples first..first+size-1 (a one-row start stands for every sample)."""
    return start.expand(size, *start.shape[1:]) if len(start) == 1 else start[first: first + size]


def noised_start(start: torch.Tensor, sigma_start: float, noise: torch.Tensor, noised: bool) -> torch.Tensor:
    """x at sigma_start: the start plus noise of that level, x = x0 + sigma eps in VE coordinates (x_t / alpha_t),
    or the start itself where it is already `noised`."""
    return start if noised else start + sigma_start * noise
