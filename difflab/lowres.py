"""Resolution changes shared by training and sampling: average-pool downsampling (how low-resolution data is made),
upsampling by interpolation, and noise-conditioning augmentation of a low-resolution condition (Ho et al. 2021)."""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F

from difflab.errors import DifflabError

UpsampleMode = Literal["nearest", "nearest-exact", "bilinear", "bilinear-antialiased", "bicubic",
                       "bicubic-antialiased"]
UPSAMPLE_MODES: tuple[UpsampleMode, ...] = ("nearest", "nearest-exact", "bilinear", "bilinear-antialiased", "bicubic",
                                            "bicubic-antialiased")
ANTIALIASED = "-antialiased"


def downsample(x: torch.Tensor, size: int) -> torch.Tensor:
    """x [B, C, H, W] average-pooled to size x size; H and W must be the same multiple of size."""
    height, width = x.shape[-2:]
    if height != width or height % size:
        raise DifflabError(f"downsampling to {size}x{size} needs square images whose side is a multiple of {size}, "
                           f"got {height}x{width}")
    return F.avg_pool2d(x, height // size)  # mean over each (H/size) x (H/size) block


def upsample(x: torch.Tensor, size: tuple[int, int], mode: UpsampleMode = "bilinear") -> torch.Tensor:
    """x [B, C, h, w] interpolated to `size` (height, width) by torch's `interpolate` modes, which sample pixel centres
    (align_corners False); "-antialiased" is its antialias=True filter (a kernel widened when shrinking, and for
    bicubic another cubic, a = -0.5 instead of -0.75), as the web UI's "Latent (antialiased)" modes use it."""
    if mode not in UPSAMPLE_MODES:
        raise DifflabError(f"upsampling mode must be one of {', '.join(UPSAMPLE_MODES)}, got {mode!r}")
    if tuple(x.shape[-2:]) == tuple(size):
        return x
    base = mode.removesuffix(ANTIALIASED)
    if base in ("bilinear", "bicubic"):
        return F.interpolate(x, size=tuple(size), mode=base, align_corners=False, antialias=base != mode)
    return F.interpolate(x, size=tuple(size), mode=base)


def augment(low_res: torch.Tensor, level: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
    """Noise-conditioning augmentation (Ho et al. 2021, Sec. 4.2): z = x_lr + s eps, level s [B] in data units."""
    return low_res + level.to(low_res.dtype).view(-1, *[1] * (low_res.ndim - 1)) * noise
