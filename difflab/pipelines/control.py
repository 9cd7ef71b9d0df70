"""ControlNet at sampling time: a Plan's denoiser wrapped so that each ControlNet's residuals join the base's skips,
and its condition carrying the control images. Every sampler, CFG and the other guidance run on it unchanged.

Control modes, as the sd-webui-controlnet extension weights the residuals (scripts/controlnet.py sets
soft_injection = mode != Balanced and cfg_injection = mode == "ControlNet is more important"; scripts/hook.py applies
them), for R residuals (skips shallow to deep, then the middle; SD 1.5 has 13, the bundled U-Net 10):
  balanced    weight s on every residual, on both halves of CFG (conditional and unconditional rows);
  prompt      "My prompt is more important": soft weights s * 0.825^(R-1-i) (the middle s, the shallowest skip
              s * 0.825^(R-1)), on both halves;
  controlnet  "ControlNet is more important": the same soft weights, on the conditional half only; the unconditional
              half runs without control, so CFG's w also amplifies the control (the original's guess mode, which
              the extension replaced by this mode).
Start and end are fractions of the sampling steps, as in the extension: step i of N gets the control when
start <= i / N <= end. They become a range of noise levels on the plan's grid, so solvers that evaluate between grid
levels (Heun, DPM-Solver) see the control wherever the trajectory lies inside it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from typing import Literal

import torch

from difflab.conditioning import Condition
from difflab.denoiser import Denoiser
from difflab.errors import DifflabError
from difflab.nets.controlnet import (
    AppliedControl,
    ControlledNet,
    ControlNet,
    check_fits,
    soft_weights,
    with_control,
)
from difflab.pipelines.start import cut_grid

ControlMode = Literal["balanced", "prompt", "controlnet"]
CONTROL_MODES: tuple[ControlMode, ...] = ("balanced", "prompt", "controlnet")


@dataclass(frozen=True, eq=False)
class ControlUnit:
    """One ControlNet and its control map [1, C, H, W] in [0, 1] (or one per sample, [n, C, H, W]) at the size its
    hint encoder takes; `name` is how the caller calls this unit in errors (`--control` or
    `alwayson_scripts.controlnet.args[0]`)."""

    net: ControlNet
    image: torch.Tensor
    scale: float = 1.0
    start: float = 0.0
    end: float = 1.0
    mode: ControlMode = "balanced"
    name: str = "--control"

    def __post_init__(self) -> None:
        if not (math.isfinite(self.scale) and self.scale >= 0):
            raise DifflabError(f"{self.name}: the control scale must be >= 0, got {self.scale}")
        if not 0 <= self.start <= self.end <= 1:
            raise DifflabError(f"{self.name}: start and end must satisfy 0 <= start <= end <= 1, got {self.start}, "
                               f"{self.end}")
        if self.mode not in CONTROL_MODES:
            raise DifflabError(f"{self.name}: the control mode must be one of {', '.join(CONTROL_MODES)}, got "
                               f"{self.mode!r}")

    def weights(self) -> tuple[float, ...]:
        count = self.net.residual_count
        return (self.scale,) * count if self.mode == "balanced" else soft_weights(self.scale, count)


def c_noise_range(denoiser: Denoiser, sigmas: torch.Tensor, start: float, end: float) -> tuple[float, float] | None:
    """The network inputs c_noise of the levels where start <= i / N <= end on the grid sigmas (N steps, descending);
    None for the whole trajectory."""
    steps = len(sigmas) - 1
    first, last = math.ceil(start * steps), min(math.floor(end * steps), steps - 1)
    if first == 0 and last == steps - 1:
        return None
    if first > last:
        return (math.inf, -math.inf)  # no step: never active
    ends = torch.stack([sigmas[last], sigmas[first]]).to(torch.float64)
    _, c_noise = denoiser.precond.inputs(torch.zeros(2, 1), ends)
    low, high = c_noise.double().tolist()
    slack = 1e-4 * (1 + abs(low) + abs(high))  # the network sees c_noise in its own dtype
    return low - slack, high + slack


def check_image(unit: ControlUnit, shape: tuple[int, ...], n: int) -> None:
    config = unit.net.config
    factor = 2**config.hint_downsample
    expected = (config.hint_channels, shape[-2] * factor, shape[-1] * factor)
    if tuple(unit.image.shape[1:]) != expected or unit.image.ndim != 4 or len(unit.image) not in (1, n):
        raise DifflabError(f"{unit.name}: the control image must be {[1, *expected]} (or one per sample) for this "
                           f"model and control model, got {list(unit.image.shape)}")


def apply_controls(plan, units: tuple[ControlUnit, ...]):
    """The Plan with its denoiser controlled by `units` (their residuals summed), the control images in its
    condition and, where the mode keeps control in CFG's unconditional half, in the negative condition too."""
    if not units:
        return plan
    modes = {unit.mode == "controlnet" for unit in units}
    if len(modes) > 1:
        raise DifflabError(f"{units[0].name}: ControlNet is more important (no control in CFG's unconditional half) "
                           "cannot be mixed with the other control modes in one request")
    base = plan.denoiser
    request = plan.request
    sigmas = plan.grid()
    if request.sigma_start is not None:
        sigmas = cut_grid(sigmas, request.sigma_start)
    applied, offset = [], 0
    for unit in units:
        check_fits(unit.net, base.net, unit.name)
        check_image(unit, plan.shape, request.n)
        channels = slice(offset, offset + unit.image.shape[1])
        offset += unit.image.shape[1]
        applied.append(AppliedControl(unit.net, channels, unit.weights(), c_noise_range(base, sigmas, unit.start,
                                                                                        unit.end)))
    device = next(base.parameters()).device
    rows = max(len(unit.image) for unit in units)
    images = torch.cat([unit.image.expand(rows, -1, -1, -1) for unit in units], dim=1).to(device)
    denoiser = Denoiser(ControlledNet(base.net, applied).to(device), base.precond, base.learned_variance)
    cond = with_control(plan.cond, images.expand(request.n, -1, -1, -1))
    guidance = plan.guidance
    if guidance is not None and guidance.cfg > 0 and units[0].mode != "controlnet":
        guidance = replace(guidance, negative=negative_with_control(guidance.negative, images))
    return replace(plan, denoiser=denoiser, cond=cond, guidance=guidance)


def negative_with_control(negative: Condition | None, images: torch.Tensor) -> Condition:
    """CFG's negative condition (one row, or one per sample; None: the null condition) with the control images (one
    row, or one per sample)."""
    rows = max(len(images), 1 if negative is None else len(negative))
    if negative is not None and len(negative) < rows:
        negative = negative.repeat(rows)
    return with_control(negative, images.expand(rows, -1, -1, -1))


ResizeMode = Literal["Just Resize", "Crop and Resize", "Resize and Fill"]
RESIZE_MODES: tuple[ResizeMode, ...] = ("Just Resize", "Crop and Resize", "Resize and Fill")  # the extension's


def fitted(image, width: int, height: int, resize_mode: ResizeMode = "Just Resize"):
    """A PIL image at width x height: stretched ("Just Resize"), scaled to cover and centre-cropped ("Crop and
    Resize"), or scaled to fit inside and padded with black ("Resize and Fill")."""
    from PIL import Image

    if resize_mode == "Just Resize":
        return image.resize((width, height), Image.Resampling.BILINEAR)
    cover = resize_mode == "Crop and Resize"
    scale = (max if cover else min)(width / image.width, height / image.height)
    w, h = max(1, round(image.width * scale)), max(1, round(image.height * scale))
    scaled = image.resize((w, h), Image.Resampling.BILINEAR)
    canvas = Image.new(image.mode, (width, height))
    canvas.paste(scaled, ((width - w) // 2, (height - h) // 2))
    return canvas


def control_map(image, kind: str, height: int, width: int, resize_mode: ResizeMode = "Just Resize") -> torch.Tensor:
    """A PIL image -> the control map [1, 1, height, width] in [0, 1]: the `kind` annotator's map of the (greyscale,
    resized) image, or for kind "none" the image itself as the map."""
    import numpy as np

    from difflab.annotators import annotate

    grey = fitted(image.convert("L"), width, height, resize_mode)
    x = torch.from_numpy(np.asarray(grey, dtype=np.float32).copy())[None, None] / 255
    return x if kind == "none" else annotate(kind, x * 2 - 1)
