"""Masked inpainting as a denoiser wrapper on the one generation path: replacement, and RePaint's resampling.

Replacement (Song et al. 2021, Sec. 5 / App. I.2; Lugmayr et al. 2022, Eq. 8): whenever the sampler evaluates the
denoiser at (x, sigma), the known region of x is first set to the noised original x0 + sigma eps (eps: the sample's
start noise, fixed for the run) and the known region of x0_hat to x0. Every sampler that evaluates the denoiser at its
current state so sees a consistent known region, and a deterministic sampler started from an image at a level
(img2img) carries its own state there along x0 + sigma eps exactly.

RePaint (Lugmayr et al. 2022, Alg. 1, with the jump schedule of their released code): the same replacement, and the
sampler is run down `jump_length` levels, then the state is re-noised back up (x_hi = x_lo + sqrt(sigma_hi^2 -
sigma_lo^2) z, the forward process in VE coordinates), `jump_n` times at each jump point, so the generated region
harmonises with the known one. The sampler runs unchanged on each downward segment of the grid (a multistep sampler
restarts its history at each segment).

The mask lives in the sampler's space (for a latent model, the latent grid); the pixel-space result is composited
with the original afterwards (Edit.composite), so the known region comes back pixel-exact.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

from difflab.errors import DifflabError
from difflab.guidance import SamplerDenoiser
from difflab.pipelines.start import start_rows
from difflab.samplers.common import StepInfo, randn_like
from difflab.schedules import append_dims

InpaintMethod = Literal["replace", "repaint"]
INPAINT_METHODS: tuple[InpaintMethod, ...] = ("replace", "repaint")
# samplers whose state is not x at the grid's levels: replacement has nothing to replace
NOT_AT_LEVELS = {"svgd": "moves particles at one fixed level in VP coordinates",
                 **{f"paradigms_{name}": "evaluates a window of steps as stacked rows in one call"
                    for name in ("ddim", "ddpm", "dpmpp_2m")}}
# samplers that cannot run a segment of the grid that ends above 0: they end every run with x0_hat = D(x, sigma_min)
WHOLE_GRID_ONLY = {"rk45": "ends every run with a denoising step to sigma = 0",
                   "annealed_langevin": "ends every run with a denoising step to sigma = 0"}


class Replacement(SamplerDenoiser):
    """D'(x, sigma) = m D(x', sigma) + (1 - m) x0, with x' = m x + (1 - m) (x0 + sigma eps); m = 1 where repainted."""

    def __init__(self, inner: nn.Module, known: torch.Tensor, mask: torch.Tensor, noise: torch.Tensor):
        super().__init__()
        self.inner, self.known, self.mask, self.noise = inner, known, mask, noise
        if hasattr(inner, "mean_shift"):  # ancestral classifier guidance acts on the whole state, as before
            self.mean_shift = inner.mean_shift

    def with_variance(self, x: torch.Tensor, sigma: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        level = append_dims(sigma.to(x.dtype).expand(x.shape[0]), x.ndim)
        noised = self.known + level * self.noise  # q(x_sigma | x0) in VE coordinates: x0 + sigma eps
        x0_hat, v = self.inner.with_variance(self.mask * x + (1 - self.mask) * noised, sigma)
        return self.mask * x0_hat + (1 - self.mask) * self.known, v


def repaint_path(steps: int, jump_length: int, jump_n: int) -> list[int]:
    """The grid indices RePaint visits (0: the noisiest level, `steps`: sigma = 0): down one level at a time, and at
    every jump point (each `jump_length` levels above the lowest) back up `jump_length` levels, `jump_n` - 1 times
    (their get_schedule_jump, with time t = steps - index)."""
    jumps = {t: jump_n - 1 for t in range(1, steps - jump_length + 1, jump_length)}
    t, path = steps, [0]
    while t >= 1:
        t -= 1
        path.append(steps - t)
        if jumps.get(t, 0) > 0:
            jumps[t] -= 1
            t += jump_length
            path.append(steps - t)
    return path


def repaint(sample: Callable, jump_length: int, jump_n: int) -> Callable:
    """A sampler function that runs `sample` over RePaint's path: downward segments of the grid, re-noised back up
    between them. Callbacks see the step count so far as StepInfo.i."""

    def run(denoiser, x: torch.Tensor, sigmas: torch.Tensor, *, generator=None, callback=None, **options):
        path, done = repaint_path(len(sigmas) - 1, jump_length, jump_n), 0

        def counted(step: StepInfo) -> None:
            callback(replace(step, i=done + step.i))

        start = 0
        for k in range(1, len(path) + 1):
            if k < len(path) and path[k] > path[k - 1]:
                continue  # still going down
            low = path[k - 1]
            if low > path[start]:
                x = sample(denoiser, x, sigmas[path[start]: low + 1], generator=generator,
                           callback=None if callback is None else counted, **options)
                done += low - path[start]
            if k < len(path):  # jump up: x_hi = x_lo + sqrt(sigma_hi^2 - sigma_lo^2) z
                high = path[k]
                x = x + torch.sqrt(sigmas[high] ** 2 - sigmas[low] ** 2).to(x.dtype) * randn_like(x, generator)
                start = k
        return x

    return run


@dataclass(frozen=True, eq=False)
class Inpainting:
    """What the generation path needs to inpaint: the original in the sampler's space and where to repaint there.

    known [1 or n, *sample_shape]: the original (encoded, for a latent model); mask [1 or n, 1 or C, h, w]: 1 where
    repainted, 0 where known, on the sampler's grid; method "replace" or "repaint" (with jump_length, jump_n).
    """

    known: torch.Tensor
    mask: torch.Tensor
    method: InpaintMethod = "replace"
    jump_length: int = 10
    jump_n: int = 10

    def __post_init__(self) -> None:
        if self.method not in INPAINT_METHODS:
            raise DifflabError(f"inpainting method must be {' or '.join(INPAINT_METHODS)}, got {self.method!r}")
        if self.jump_length < 1 or self.jump_n < 1:
            raise DifflabError(f"RePaint's jump length and count must be >= 1, got {self.jump_length} and "
                               f"{self.jump_n}")

    def check(self, sampler: str) -> None:
        """Refuse the samplers where this kind of inpainting makes no sense, with the reason."""
        if sampler in NOT_AT_LEVELS:
            raise DifflabError(f"inpainting cannot use sampler {sampler}: it {NOT_AT_LEVELS[sampler]}")
        if self.method == "repaint" and sampler in WHOLE_GRID_ONLY:
            raise DifflabError(f"RePaint runs the sampler on segments of the grid, and sampler {sampler} "
                               f"{WHOLE_GRID_ONLY[sampler]}; use --mode replace or another sampler")

    def bind(self, denoiser: nn.Module, sample: Callable, first: int, size: int,
             noise: torch.Tensor) -> tuple[nn.Module, Callable]:
        """The sampler-facing denoiser and sampler function for samples first..first+size-1, whose start noise is
        `noise`."""
        known = start_rows(self.known, first, size).to(noise)
        mask = start_rows(self.mask, first, size).to(noise)
        wrapped = Replacement(denoiser, known, mask, noise)
        return wrapped, repaint(sample, self.jump_length, self.jump_n) if self.method == "repaint" else sample


def sampler_mask(mask: torch.Tensor, shape: tuple[int, ...]) -> torch.Tensor:
    """The pixel mask [N, 1, H, W] on the sampler's grid `shape` (C, h, w), made binary: a pixel model repaints where
    the (blurred) mask rounds to 1, as the web UI's latent mask (np.around). On a coarser latent grid a cell is
    repainted where any of its pixels' rounded mask is 1 (a max over the cell), so the repainted cells cover the mask
    and its border; the pixel composite then restores every known pixel exactly."""
    binary = (mask >= 0.5).to(mask.dtype)
    if tuple(binary.shape[-2:]) == tuple(shape[-2:]):
        return binary
    return F.adaptive_max_pool2d(binary, shape[-2:])
