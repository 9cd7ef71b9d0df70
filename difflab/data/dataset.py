"""An in-memory data set: uint8 images or float points, with optional labels."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch


@dataclass(frozen=True)
class Dataset:
    """`data` is uint8 [N, C, H, W] for images (scaled to [-1, 1] on access), float32 [N, D] for points, or float32
    [N, c, h, w] for an autoencoder's scaled latents of images (difflab.latent)."""

    name: str
    kind: Literal["image", "points", "latent"]
    data: torch.Tensor
    labels: torch.Tensor | None = None
    class_names: tuple[str, ...] | None = None

    def __len__(self) -> int:
        return self.data.shape[0]

    @property
    def shape(self) -> tuple[int, ...]:
        """Shape of one example."""
        return tuple(self.data.shape[1:])

    @property
    def num_classes(self) -> int | None:
        return None if self.class_names is None else len(self.class_names)

    def batch(self, index: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Examples at `index` as float32 (images mapped from [0, 255] to [-1, 1]) and their labels."""
        x = self.data[index]
        x = x.float() / 127.5 - 1.0 if self.kind == "image" else x.float()
        return x, None if self.labels is None else self.labels[index]
