"""img2img and inpainting on the one generation path: a checked txt2img Plan turned into an Edit by a start state
(the input noised to the strength's level, Meng et al. 2022, SDEdit) and, with a mask, the inpainting wrapper.

    edit = plan_edit(plan, model, images, strength=0.8, mask=MaskRequest(mask))
    x = edit.sample()   # pixel images [n, C, H, W]; the known region is the input's, pixel for pixel

Steps follow the web UI (difflab.pipelines.start.img2img_levels): by default a grid of `steps` steps of which the last
~strength x steps run; with exact_steps a longer grid of which exactly `steps` run. Strength 0 returns the inputs;
strength 1 is txt2img from the same seed (the input is not used, except as the known region of an inpainting).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from typing import Literal

import torch

from difflab.edit.images import fill, overlay_mask
from difflab.edit.inpaint import Inpainting, InpaintMethod, sampler_mask
from difflab.errors import DifflabError
from difflab.grids import make_grid
from difflab.pipelines.request import Plan
from difflab.pipelines.start import img2img_levels, start_rows
from difflab.samplers.common import StepInfo

Fill = Literal["fill", "original", "latent_noise", "latent_nothing"]
FILLS: tuple[Fill, ...] = ("fill", "original", "latent_noise", "latent_nothing")  # the web UI's inpainting_fill 0..3


@dataclass(frozen=True, eq=False)
class MaskRequest:
    """An inpainting request: mask [1 or n, H, W] in [0, 1] at the model's image size, 1 where repainted (already
    inverted and blurred as asked); what the masked region starts from (`fill`, the web UI's inpainting_fill:
    "fill" blurs the surrounding colours in, "original" keeps the input, "latent_noise" puts the sample's noise
    there, "latent_nothing" zeros); and the method, replacement or RePaint."""

    mask: torch.Tensor
    fill: Fill = "original"
    method: InpaintMethod = "replace"
    jump_length: int = 10
    jump_n: int = 10

    def __post_init__(self) -> None:
        if self.fill not in FILLS:
            raise DifflabError(f"inpainting fill must be one of {', '.join(FILLS)}, got {self.fill!r}")


def encoder(model) -> Callable[[torch.Tensor], torch.Tensor]:
    """Images -> what the model's sampler runs on: a latent model's encode (Model.encode, ServedModel.encode), else
    the identity. (The way back, Model.decoder, is the plan's `decode`.)"""
    return getattr(model, "encode", None) or (lambda images: images)


@dataclass(frozen=True, eq=False)
class Edit:
    """A checked edit: the plan that samples it (its request carries the start state and inpainting; its decode
    brings a latent model's samples to pixels), or nothing to run (strength 0), and what the results are composited
    with."""

    plan: Plan
    runs: bool
    images: torch.Tensor  # [1 or n, C, H, W] the inputs in [-1, 1]
    overlay: torch.Tensor | None  # [1 or n, 1, H, W]: how much of the result shows (None: all of it, no mask)

    def composite(self, x: torch.Tensor, first: int) -> torch.Tensor:
        """Images first.. of a run over the originals: result where the overlay is 1, the input where it is 0."""
        if self.overlay is None:
            return x
        overlay = start_rows(self.overlay, first, len(x))
        return (overlay * x.double() + (1 - overlay) * start_rows(self.images, first, len(x))).float()

    def batches(self, callback: Callable[[int, StepInfo], None] | None = None) -> Iterator[torch.Tensor]:
        """Pixel images batch by batch, as each is done."""
        request, first = self.plan.request, 0
        if not self.runs:
            for first in range(0, request.n, request.batch):
                yield start_rows(self.images, first, min(request.batch, request.n - first)).float()
            return
        for x in self.plan.batches(callback):
            yield self.composite(x, first)
            first += len(x)

    def sample(self, callback: Callable[[int, StepInfo], None] | None = None) -> torch.Tensor:
        return torch.cat(list(self.batches(callback)))


def seeded_noise(n: int, shape: tuple[int, ...], seed: int) -> torch.Tensor:
    """The noise generate() draws for samples 0..n-1 (sample i from seed + i), float64 [n, *shape]."""
    return torch.stack([torch.randn(shape, generator=torch.Generator().manual_seed(seed + i), dtype=torch.float64)
                        for i in range(n)])


def plan_edit(plan: Plan, model, images: torch.Tensor, strength: float, *, exact_steps: bool = False,
              mask: MaskRequest | None = None) -> Edit:
    """The Edit of images [1 or n, C, H, W] (in [-1, 1], at the model's image size) at denoising `strength`, with
    the sampler, steps, condition and guidance of `plan` (a checked txt2img plan of n samples)."""
    request = plan.request
    if request.sigmas is not None:
        raise DifflabError("img2img cuts its grid at the strength's level: leave out --sigmas")
    images = images.double()
    if images.ndim != 4 or len(images) not in (1, request.n):
        raise DifflabError(f"img2img takes 1 or n = {request.n} images [N, C, H, W], got {list(images.shape)}")
    levels = img2img_levels(lambda steps: make_grid(plan.denoiser.schedule, steps, plan.sampler.grid,
                                                    request.sections), request.steps, strength, exact_steps)
    overlay = None
    if mask is not None:
        masks = mask.mask.double().reshape(-1, 1, *images.shape[-2:])
        if len(masks) not in (1, request.n):
            raise DifflabError(f"inpainting takes 1 or n = {request.n} masks, got {len(masks)}")
        overlay = overlay_mask(masks)
    if not levels.runs:
        return Edit(plan, False, images, overlay)
    pixels = images
    if mask is not None and mask.fill == "fill":
        rows = max(len(images), len(masks))
        pixels = torch.stack([fill(start_rows(images, i, 1)[0], start_rows(masks, i, 1)[0, 0]) for i in range(rows)])
    start = encoder(model)(pixels.float()).double()
    inpainting = None
    if mask is not None:
        repaint = sampler_mask(masks, plan.shape)  # [1 or n, 1, h, w] on the sampler's grid
        inpainting = Inpainting(start, repaint, mask.method, mask.jump_length, mask.jump_n)
        if mask.fill == "latent_noise":  # the web UI's create_random_tensors from the samples' seeds
            start = start * (1 - repaint) + seeded_noise(request.n, plan.shape, request.seed) * repaint
        elif mask.fill == "latent_nothing":
            start = start * (1 - repaint)
    begins = levels.sigma_start is not None
    edited = replace(request, steps=levels.steps, start=start if begins else None, sigma_start=levels.sigma_start,
                     inpaint=inpainting)
    return Edit(replace(plan, request=edited, levels=None), True, images, overlay)  # its own grid
