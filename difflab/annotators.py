"""Annotators: the condition maps a ControlNet is trained on and steered by, computed from images on the fly.

Every annotator maps images [B, C, H, W] in [-1, 1] (C = 1 or 3; colour is reduced to luma first) to a map
[B, 1, H, W] in [0, 1] of the same size, in torch, batched, without OpenCV:
  sobel       |grad I| / 4 of the image I in [0, 1] by 3x3 Sobel kernels, clipped to 1 (a unit step gives 1)
  canny       Sobel, non-maximum suppression across the gradient direction and hysteresis (Canny 1986): 1 on
              thin edges, 0 elsewhere; no smoothing first, as OpenCV's cv2.Canny that the web UI calls
  silhouette  1 inside the object: every pixel not joined to the border through background (I <= threshold)
  lowres      the image averaged over factor x factor blocks and repeated back (mapped to [0, 1])
  scribble    canny edges thickened by a 3x3 maximum filter: strokes three pixels wide, like a sketch
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from difflab.errors import DifflabError

SOBEL_X = torch.tensor([[-1.0, 0.0, 1.0], [-2.0, 0.0, 2.0], [-1.0, 0.0, 1.0]])
CANNY_LOW, CANNY_HIGH = 0.4, 0.8  # on |grad I| of I in [0, 1]: OpenCV's usual 100, 200 on 0..255 images, / 255
SILHOUETTE_THRESHOLD = 0.05  # intensity in [0, 1] at or below which a pixel is background
LOWRES_FACTOR = 4
LUMA = (0.299, 0.587, 0.114)  # ITU-R BT.601, as PIL's convert("L")


def intensity(images: torch.Tensor) -> torch.Tensor:
    """Images [B, C, H, W] in [-1, 1] -> intensity I [B, 1, H, W] in [0, 1] (BT.601 luma for 3 channels)."""
    if images.ndim != 4 or images.shape[1] not in (1, 3):
        raise DifflabError(f"an annotator takes images [B, 1 or 3, H, W], got {list(images.shape)}")
    x = (images.float().clamp(-1, 1) + 1) / 2
    if x.shape[1] == 3:
        x = sum(w * x[:, c: c + 1] for c, w in enumerate(LUMA))
    return x


def sobel_gradient(i: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(G_x, G_y) of I [B, 1, H, W] by the 3x3 Sobel kernels, the border replicated."""
    padded = F.pad(i, (1, 1, 1, 1), mode="replicate")
    kx = SOBEL_X.to(i)[None, None]
    return F.conv2d(padded, kx), F.conv2d(padded, kx.transpose(2, 3))


def sobel(images: torch.Tensor) -> torch.Tensor:
    gx, gy = sobel_gradient(intensity(images))
    return (torch.hypot(gx, gy) / 4).clamp(max=1)  # |grad I| / 4: a unit step edge gives 1


# unit steps (dy, dx) along the gradient direction quantised to 8 sectors of 45 degrees, counter-clockwise from +x
DIRECTIONS = ((0, 1), (1, 1), (1, 0), (1, -1), (0, -1), (-1, -1), (-1, 0), (-1, 1))


def shifted(x: torch.Tensor, dy: int, dx: int) -> torch.Tensor:
    """x[..., y + dy, x + dx], zero outside the image."""
    padded = F.pad(x, (1, 1, 1, 1))
    h, w = x.shape[-2:]
    return padded[..., 1 + dy: 1 + dy + h, 1 + dx: 1 + dx + w]


def non_maximum_suppression(magnitude: torch.Tensor, gx: torch.Tensor, gy: torch.Tensor) -> torch.Tensor:
    """magnitude where it is a maximum along the gradient, else 0: > the neighbour ahead (uphill) and >= the one
    behind, so of a two-pixel ridge across a step the brighter pixel stays and edges lie on the bright side."""
    sector = torch.round(torch.atan2(gy, gx) / (torch.pi / 4)).long() % 8
    keep = torch.zeros_like(magnitude, dtype=torch.bool)
    for k, (dy, dx) in enumerate(DIRECTIONS):
        ahead, behind = shifted(magnitude, dy, dx), shifted(magnitude, -dy, -dx)
        keep |= (sector == k) & (magnitude > ahead) & (magnitude >= behind)
    return magnitude * keep


def hysteresis(magnitude: torch.Tensor, low: float, high: float) -> torch.Tensor:
    """Pixels >= high, and pixels >= low joined to one of them through pixels >= low (8-connected)."""
    weak = magnitude >= low
    edges = magnitude >= high
    while True:
        grown = (F.max_pool2d(edges.float(), 3, stride=1, padding=1) > 0) & weak
        if torch.equal(grown, edges):
            return edges
        edges = grown


def canny(images: torch.Tensor, low: float = CANNY_LOW, high: float = CANNY_HIGH) -> torch.Tensor:
    if not 0 <= low <= high:
        raise DifflabError(f"canny thresholds need 0 <= low <= high, got {low}, {high}")
    gx, gy = sobel_gradient(intensity(images))
    thin = non_maximum_suppression(torch.hypot(gx, gy), gx, gy)
    return hysteresis(thin, low, high).float()


def silhouette(images: torch.Tensor, threshold: float = SILHOUETTE_THRESHOLD) -> torch.Tensor:
    """1 - (background reachable from the border): the object with its holes filled."""
    background = intensity(images) <= threshold
    outside = torch.zeros_like(background)
    outside[..., 0, :], outside[..., -1, :] = background[..., 0, :], background[..., -1, :]
    outside[..., :, 0], outside[..., :, -1] = background[..., :, 0], background[..., :, -1]
    while True:  # flood fill from the border through background pixels (4-connected)
        grown = outside.clone()
        for dy, dx in ((0, 1), (0, -1), (1, 0), (-1, 0)):
            grown |= shifted(outside.float(), dy, dx).bool()
        grown &= background
        if torch.equal(grown, outside):
            return (~outside).float()
        outside = grown


def lowres(images: torch.Tensor, factor: int = LOWRES_FACTOR) -> torch.Tensor:
    """Block means over factor x factor (the last partial block too), repeated back to H x W."""
    i = intensity(images)
    h, w = i.shape[-2:]
    means = F.avg_pool2d(i, factor, ceil_mode=True, count_include_pad=False)
    return means.repeat_interleave(factor, 2).repeat_interleave(factor, 3)[..., :h, :w]


def scribble(images: torch.Tensor) -> torch.Tensor:
    return F.max_pool2d(canny(images), 3, stride=1, padding=1)  # edges dilated by a 3x3 square


@dataclass(frozen=True)
class Annotator:
    name: str
    fn: Callable[[torch.Tensor], torch.Tensor]
    description: str


ANNOTATORS = {a.name: a for a in (
    Annotator("canny", canny, "thin edges: Sobel, non-maximum suppression, hysteresis"),
    Annotator("sobel", sobel, "gradient magnitude |grad I| / 4"),
    Annotator("silhouette", silhouette, "the object's filled mask"),
    Annotator("lowres", lowres, f"{LOWRES_FACTOR}x{LOWRES_FACTOR} block means"),
    Annotator("scribble", scribble, "canny edges thickened to 3-pixel strokes"),
)}
CONTROL_TYPES = tuple(ANNOTATORS)


def annotate(kind: str, images: torch.Tensor) -> torch.Tensor:
    """The `kind` map [B, 1, H, W] in [0, 1] of images [B, C, H, W] in [-1, 1]."""
    if kind not in ANNOTATORS:
        raise DifflabError(f"control type must be one of {', '.join(CONTROL_TYPES)}, got {kind!r}")
    with torch.no_grad():
        return ANNOTATORS[kind].fn(images)
