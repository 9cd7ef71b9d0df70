"""Where sampling begins other than at prior noise: a start image noised to a level sigma_start (img2img).

As in the AUTOMATIC1111 web UI with k-diffusion: the noise-level grid is cut at sigma_start (its strength), the start
image gets noise of that level, and the same sampler runs over the rest of the grid. A start that is already noisy
at sigma_start (an inverted image, a cascade's upsampled sample) is taken as it is.
"""

from __future__ import annotations

import torch

from difflab.errors import DifflabError


def cut_grid(sigmas: torch.Tensor, sigma_start: float) -> torch.Tensor:
    """sigma_start, then the levels of the descending grid `sigmas` below it."""
    if not 0 < sigma_start < float(sigmas[0]):
        raise DifflabError(f"sigma_start must lie in (0, {float(sigmas[0]):g}), below the grid's noisiest level; "
                           f"got {sigma_start}")
    return torch.cat([sigmas.new_tensor([sigma_start]), sigmas[sigmas < sigma_start]])


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
