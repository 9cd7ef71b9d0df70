"""The web UI's "hires fix" (txt2img with enable_hr): sample at the model's size, upscale, then denoise again at
the larger size from the upscaled images at a denoising strength, as img2img does.

The second pass is an img2img run on the one generation path: the strength picks its start level by the same rule
(difflab.pipelines.start.img2img_levels, A1111's setup_img2img_steps), over hr_second_pass_steps steps (0: as many
as the first pass), from the same seeds. The target size follows A1111's calculate_target_resolution
(modules/processing.py): width and height times hr_scale, or hr_resize_x / hr_resize_y (one of them keeps the aspect
ratio; both: upscale to cover, then crop the centre). The upscaler is interpolation of the samples
(difflab.lowres.upsample's modes: the UI's latent upscalers, here in pixel space) or a super-resolution model (a
cascade's second stage).
The model must be able to run at the target size: a U-Net (convolutional) at a size its downsampling divides; other
networks are refused. The second pass may run another sampler or grid (A1111 hr_sampler_name, hr_scheduler): the
same seeds, condition and guidance, that sampler's options; another condition (hr_prompt, hr_negative_prompt); and
another model (hr_checkpoint_name, A1111's reload of the weights before sample_hr_pass): a pixel U-Net of the same
channels that accepts the request's condition, with the refiner (if any) taking over its low-noise end as in the
first pass.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import Any

import torch

from difflab.denoiser import Denoiser
from difflab.errors import DifflabError
from difflab.grids import GridKind, make_grid
from difflab.lowres import UPSAMPLE_MODES, upsample
from difflab.nets.unet import UNetConfig
from difflab.pipelines.cascade import SuperResolution
from difflab.pipelines.dialect import CLI, Dialect
from difflab.pipelines.refiner import Refined, check_accepts
from difflab.pipelines.request import Plan, plan_request
from difflab.pipelines.samplers import choose_sampler
from difflab.pipelines.start import img2img_levels
from difflab.train.config import ExperimentConfig

MODEL_UPSCALER = "model"  # upscale with a super-resolution model
SECOND_PASS = Dialect({**CLI.names, "sampler": "--hires-sampler", "grid": "--hires-grid"})  # its errors' flag names


@dataclass(frozen=True)
class Hires:
    """A1111's hires-fix fields: hr_scale, hr_resize_x, hr_resize_y, denoising_strength, hr_second_pass_steps,
    hr_upscaler (an interpolation mode of difflab.lowres, or model), hr_sampler_name / hr_scheduler (a sampler name
    and grid) and hr_prompt / hr_negative_prompt (a condition), with the UI's defaults."""

    scale: float = 2.0
    resize_x: int = 0
    resize_y: int = 0
    strength: float = 0.75
    steps: int = 0
    upscaler: str = "bilinear"
    sampler: str | None = None  # the second pass's sampler; None: the first pass's
    grid: GridKind | None = None  # its grid; None: the first pass's, or with `sampler` that sampler's own
    options: Mapping[str, Any] | None = None  # its options; None: the first pass's, or with `sampler` its defaults
    # its condition: Request fields label, prompt and guidance (A1111 hr_prompt, hr_negative_prompt); None: the first's
    condition: Mapping[str, Any] | None = None

    def __post_init__(self) -> None:
        if not self.scale > 0:
            raise DifflabError(f"hires scale must be > 0, got {self.scale}")
        if self.resize_x < 0 or self.resize_y < 0:
            raise DifflabError(f"hires resize must be >= 0 pixels (0: by the scale), got {self.resize_x}x"
                               f"{self.resize_y}")
        if not 0 <= self.strength <= 1:
            raise DifflabError(f"hires denoising strength must lie in [0, 1], got {self.strength}")
        if self.steps < 0:
            raise DifflabError(f"hires second-pass steps must be >= 0 (0: as many as the first pass), got {self.steps}")
        if self.upscaler not in (*UPSAMPLE_MODES, MODEL_UPSCALER):
            raise DifflabError(f"hires upscaler must be one of {', '.join(UPSAMPLE_MODES)} or a super-resolution "
                               f"model, got {self.upscaler!r}")


@dataclass(frozen=True)
class HiresSize:
    upscale: tuple[int, int]  # (height, width) the first pass is upscaled to
    target: tuple[int, int]  # after the centre crop (equal unless both resize_x and resize_y are given)


def hires_size(height: int, width: int, hires: Hires) -> HiresSize:
    """A1111 StableDiffusionProcessingTxt2Img.calculate_target_resolution, with its crop in pixels."""
    if hires.resize_x == 0 and hires.resize_y == 0:
        size = (int(height * hires.scale), int(width * hires.scale))
        return HiresSize(size, size)
    if hires.resize_y == 0:
        size = (hires.resize_x * height // width, hires.resize_x)
        return HiresSize(size, size)
    if hires.resize_x == 0:
        size = (hires.resize_y, hires.resize_y * width // height)
        return HiresSize(size, size)
    if width / height < hires.resize_x / hires.resize_y:  # cover the target, then crop the overhang
        upscale = (hires.resize_x * height // width, hires.resize_x)
    else:
        upscale = (hires.resize_y, hires.resize_y * width // height)
    return HiresSize(upscale, (hires.resize_y, hires.resize_x))


def shape_at(config: ExperimentConfig, height: int, width: int) -> tuple[int, int, int]:
    """The sample shape [C, height, width] of the model run at that size, or one line saying why it cannot be."""
    if not isinstance(config.network, UNetConfig):
        raise DifflabError(f"the hires fix runs the model at {height}x{width}; only a convolutional network (a U-Net) "
                           f"runs at another size than it was trained at, and this model is a "
                           f"{type(config.network).__name__}")
    factor = config.network.size_factor
    if height % factor or width % factor or height < factor or width < factor:
        raise DifflabError(f"the hires fix runs the model at {height}x{width}; this U-Net halves the size "
                           f"{len(config.network.channel_mult) - 1} times, so both sides must be multiples of {factor}")
    return config.data_shape[0], height, width


def check_second_model(first: ExperimentConfig, second: ExperimentConfig, kinds: frozenset[str]) -> None:
    """The second pass's model (--hires-model, A1111 hr_checkpoint_name) must denoise the first pass's images (their
    channels) and accept the request's condition kinds."""
    if second.data_shape[0] != first.data_shape[0]:
        raise DifflabError(f"--hires-model makes {second.data_shape[0]}-channel samples, the model "
                           f"{first.data_shape[0]}-channel: the second pass must denoise the first pass's images")
    check_accepts(second, kinds, "--hires-model")


def second_pass_model(plan: Plan, model: tuple[Denoiser, ExperimentConfig]) -> tuple[Denoiser, ExperimentConfig]:
    """The second pass's denoiser and config: `model`'s, handing over to the first pass's refiner where it has one."""
    denoiser, config = model
    if isinstance(plan.denoiser, Refined):  # the refiner takes the low-noise end of both passes
        denoiser = Refined(denoiser, plan.denoiser.refiner, plan.denoiser.switch_at)
    return denoiser, config


def centre_crop(x: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """x [..., H, W] cropped to `size` about its centre (A1111 truncate_x / truncate_y)."""
    dy, dx = x.shape[-2] - size[0], x.shape[-1] - size[1]
    return x[..., dy // 2: x.shape[-2] - (dy + 1) // 2, dx // 2: x.shape[-1] - (dx + 1) // 2]


@dataclass(frozen=True)
class HiresOutput:
    first_pass: torch.Tensor  # [n, C, h, w] at the model's size
    upscaled: torch.Tensor  # [n, C, H, W] the second pass's start
    samples: torch.Tensor  # [n, C, H, W]


def second_pass_sampler(plan: Plan, hires: Hires) -> Plan:
    """`plan` with the sampler, grid and options of the hires fix's second pass."""
    if hires.sampler is None and hires.grid is None and hires.options is None:
        return plan
    if hires.sampler is None:
        name, grid, options = plan.request.sampler, hires.grid or plan.sampler.grid, plan.options
    else:
        name, grid, options = hires.sampler, hires.grid, {}
    options = options if hires.options is None else hires.options
    sampler, options = choose_sampler(name, grid, None, options, plan.denoiser, SECOND_PASS)
    return replace(plan, sampler=sampler, options=options,
                   request=replace(plan.request, sampler=name, grid=sampler.grid, options=options))


def plan_hires(plan: Plan, config: ExperimentConfig, hires: Hires,
               model: tuple[Denoiser, ExperimentConfig] | None = None) -> tuple[Plan | None, HiresSize]:
    """The second pass as a Plan without its start (None at strength 0: the upscaled images are the answer), run by
    `model` (denoiser, config; default the first pass's)."""
    if plan.request.sections is not None or plan.request.sigmas is not None:
        raise DifflabError("the hires fix's second pass builds its own grid: leave out --sections and --sigmas")
    size = hires_size(*plan.shape[-2:], hires)
    denoiser, config = (plan.denoiser, config) if model is None else second_pass_model(plan, model)
    if hires.condition is not None or model is not None:  # another prompt or model: the second pass's own plan
        plan = replace(plan_request(replace(plan.request, **(hires.condition or {})), denoiser, config,
                                    decode=plan.decode), shape=plan.shape)
    plan = second_pass_sampler(plan, hires)
    shape = shape_at(config, *size.target)
    steps = hires.steps or plan.request.steps
    levels = img2img_levels(lambda k: make_grid(plan.denoiser.schedule, k, plan.sampler.grid), steps, hires.strength)
    if not levels.runs:
        return None, size
    request = replace(plan.request, steps=levels.steps, sigma_start=levels.sigma_start)
    return replace(plan, request=request, shape=shape, levels=None), size  # its own grid


def run_hires(plan: Plan, config: ExperimentConfig, hires: Hires, *, upscaler: SuperResolution | None = None,
              model: tuple[Denoiser, ExperimentConfig] | None = None, progress: bool = False) -> HiresOutput:
    """First pass by `plan`, upscale (by interpolation, or by the super-resolution stage `upscaler`), second pass (by
    `model`, default the first pass's)."""
    second, size = plan_hires(plan, config, hires, model)
    if (hires.upscaler == MODEL_UPSCALER) != (upscaler is not None):
        raise DifflabError("hires upscaler 'model' goes with a super-resolution model, and only it")
    first = plan.sample(progress=progress)
    if upscaler is None:
        upscaled = centre_crop(upsample(first, size.upscale, hires.upscaler), size.target)
    else:
        if tuple(upscaler.plan.shape[-2:]) != size.target:
            raise DifflabError(f"the super-resolution upscaler makes {list(upscaler.plan.shape[-2:])} images; the "
                               f"hires fix asks for {list(size.target)}")
        upscaled = upscaler.run(first, progress)
    if second is None:
        return HiresOutput(first, upscaled, upscaled)
    start = None if second.request.sigma_start is None else upscaled
    second = replace(second, request=replace(second.request, start=start))
    return HiresOutput(first, upscaled, second.sample(progress=progress))
