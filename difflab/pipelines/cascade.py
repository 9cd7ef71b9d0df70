"""Cascaded diffusion (Ho et al. 2021): a low-resolution base model's samples, upsampled, condition a
super-resolution model; the condition is corrupted by Gaussian noise at a level the model is also given
(noise-conditioning augmentation), which makes the stage robust to the base model's errors.

A cascade is a pipeline of pipelines: each stage is a Plan (its own sampler, steps, grid and guidance) on the one
generation path; the super-resolution stage's Plan gets the low-resolution condition added to its own (class or
text) condition rows, so those conditions run through both stages.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import torch

from difflab.conditioning import Condition
from difflab.errors import DifflabError
from difflab.lowres import UpsampleMode, augment, upsample
from difflab.pipelines.conditions import accepted
from difflab.pipelines.request import Plan, Request
from difflab.samplers.common import randn_like
from difflab.train.config import ExperimentConfig

# Sample i's augmentation noise comes from seed + i + this offset, a stream its sampling noise (seed + i) never uses
AUGMENTATION_SEED_OFFSET = 1 << 32


@dataclass(frozen=True)
class CascadeOutput:
    low_res: torch.Tensor  # [n, C, h, w] the base stage's samples
    samples: torch.Tensor  # [n, C, H, W] the super-resolution stage's


def check_super_resolution(config: ExperimentConfig, low_shape: tuple[int, ...], noise_level: float) -> None:
    """A super-resolution model takes `low_shape` samples (its train.low_res) and levels up to the largest it was
    trained with; anything else is refused with one line."""
    train = config.train
    if "low_res" not in config.network.accepts or train.low_res is None:
        raise DifflabError("the super-resolution stage needs a model trained with train.low_res (it takes the "
                           "upsampled low-resolution image); this one was not")
    expected = (config.data_shape[0], train.low_res, train.low_res)
    if tuple(low_shape) != expected:
        raise DifflabError(f"the super-resolution model takes {list(expected)} low-resolution images; the base model "
                           f"makes {list(low_shape)}")
    if not 0 <= noise_level <= train.low_res_augmentation:
        raise DifflabError(f"--noise-level must lie in [0, {train.low_res_augmentation:g}], the augmentation levels "
                           f"the super-resolution model was trained with; got {noise_level}")


def low_res_condition(low_res: torch.Tensor, size: tuple[int, int], noise_level: float, seed: int,
                      mode: UpsampleMode = "bilinear") -> dict[str, torch.Tensor]:
    """The tensors that condition a super-resolution stage on samples `low_res` [n, C, h, w] (sample i from seed + i):
    upsampled to `size`, augmented at `noise_level` with noise from sample i's own augmentation stream."""
    up = upsample(low_res.float(), size, mode)
    generators = [torch.Generator().manual_seed(seed + i + AUGMENTATION_SEED_OFFSET) for i in range(len(up))]
    noise = randn_like(torch.empty(up.shape, dtype=torch.float64), generators).float()
    level = torch.full((len(up),), float(noise_level))
    return {"low_res": augment(up, level, noise), "noise_level": level}


def stage_request(request: Request, config: ExperimentConfig) -> Request:
    """The first stage's `request` for a super-resolution stage: its class or text only where that model takes them
    (else they reach it through the low-resolution image, and nothing is left to guide), on its own grid, from noise
    (no start image, mask or ControlNet of the first stage's)."""
    kinds = accepted(config)
    label = request.label if "class" in kinds else None
    prompt = request.prompt if "text" in kinds else None
    guidance = request.guidance if label is not None or prompt is not None else replace(
        request.guidance, cfg=None, negative_label=None, negative_prompt=None)
    return replace(request, label=label, prompt=prompt, guidance=guidance, sections=None, start=None,
                   sigma_start=None, start_noised=False, inpaint=None, controls=())


def with_tensors(cond: Condition | None, tensors: dict[str, torch.Tensor], n: int) -> Condition:
    """`cond` (n rows, or None) with `tensors` added."""
    cond = cond or Condition()
    if len(cond) not in (0, n):
        raise DifflabError(f"a stage's condition has {len(cond)} rows for {n} samples")
    return Condition(cond.labels, cond.text, {**cond.tensors, **tensors})


@dataclass(frozen=True)
class SuperResolution:
    """A super-resolution stage: its Plan (n samples from the cascade's seeds, with its own sampler and class or text
    condition rows), its model's config, and the augmentation level its low-resolution condition gets."""

    plan: Plan
    config: ExperimentConfig
    noise_level: float = 0.0
    mode: UpsampleMode = "bilinear"  # how the low-resolution samples are upsampled (as in training)

    def run(self, low_res: torch.Tensor, progress: bool = False) -> torch.Tensor:
        """The stage's samples conditioned on `low_res` [n, C, h, w], one row per sample."""
        check_super_resolution(self.config, tuple(low_res.shape[1:]), self.noise_level)
        request = self.plan.request
        if len(low_res) != request.n:
            raise DifflabError(f"the super-resolution stage makes {request.n} samples from {len(low_res)} images")
        tensors = low_res_condition(low_res, tuple(self.plan.shape[-2:]), self.noise_level, request.seed, self.mode)
        return replace(self.plan, cond=with_tensors(self.plan.cond, tensors, request.n)).sample(progress=progress)


def run_cascade(base: Plan, sr: SuperResolution, progress: bool = False) -> CascadeOutput:
    """base -> upsample -> super-resolution: both stages draw the same n samples from the same seeds."""
    if (base.request.n, base.request.seed) != (sr.plan.request.n, sr.plan.request.seed):
        raise DifflabError("the cascade's stages must draw the same samples (n and seed)")
    check_super_resolution(sr.config, base.shape, sr.noise_level)
    low_res = base.sample(progress=progress)
    return CascadeOutput(low_res, sr.run(low_res, progress))
