"""The low-resolution condition of a super-resolution model's training examples: each image average-pooled to the
low resolution, upsampled back, and corrupted by Gaussian noise at a level drawn per example, which the network is
also given (noise-conditioning augmentation, Ho et al. 2021, Sec. 4.2)."""

from __future__ import annotations

from dataclasses import replace

import torch

from difflab.conditioning import Condition
from difflab.data import Dataset
from difflab.errors import DifflabError
from difflab.lowres import augment, downsample, upsample


class LowResConditions:
    """Adds `low_res` (the augmented, upsampled low-resolution image) and `noise_level` (its level s ~ U[0, max_level])
    to a batch's condition; the draws come from the training RNG stream after the other conditions' draws."""

    def __init__(self, size: int, max_level: float):
        self.size, self.max_level = size, max_level

    def __call__(self, x0: torch.Tensor, cond: Condition | None, generator: torch.Generator) -> Condition:
        low_res = upsample(downsample(x0.float(), self.size), tuple(x0.shape[-2:]))
        level = torch.rand(len(x0), generator=generator, dtype=torch.float64).float() * self.max_level
        noise = torch.randn(low_res.shape, generator=generator)
        cond = cond or Condition()
        tensors = {**cond.tensors, "low_res": augment(low_res, level, noise).to(x0.dtype), "noise_level": level}
        return Condition(cond.labels, cond.text, tensors)


def downsampled(data: Dataset, size: int) -> Dataset:
    """An image data set average-pooled to size x size (uint8, rounded): the data of a cascade's low-resolution base."""
    if data.kind != "image":
        raise DifflabError(f"train.resolution needs image data; {data.name!r} holds {data.kind}")
    pooled = downsample(data.data.float(), size).round().to(torch.uint8)
    return replace(data, data=pooled)
