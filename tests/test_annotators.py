"""Annotators against their definitions on synthetic images: a square's edges, a disc's silhouette, block means."""

import pytest
import torch
import torch.nn.functional as F

from difflab.annotators import (
    ANNOTATORS,
    CANNY_HIGH,
    CANNY_LOW,
    annotate,
    canny,
    lowres,
    scribble,
    silhouette,
    sobel,
)
from difflab.errors import DifflabError


def square(size=16, lo=4, hi=12, value=1.0):
    """A bright square [lo, hi)^2 on black, in [-1, 1]."""
    x = -torch.ones(1, 1, size, size)
    x[..., lo:hi, lo:hi] = value
    return x


def ring(mask: torch.Tensor) -> torch.Tensor:
    """The pixels of a mask with a 4-neighbour outside it: its inner boundary."""
    p = F.pad(mask, (1, 1, 1, 1))
    neighbours = torch.stack([p[..., :-2, 1:-1], p[..., 2:, 1:-1], p[..., 1:-1, :-2], p[..., 1:-1, 2:]])
    return mask * (1 - neighbours.amin(dim=0))


def disc(size=28, radius=8.0, inner=None):
    yy, xx = torch.meshgrid(torch.arange(size, dtype=torch.float32), torch.arange(size, dtype=torch.float32),
                            indexing="ij")
    r2 = (yy - (size - 1) / 2) ** 2 + (xx - (size - 1) / 2) ** 2
    mask = (r2 <= radius**2).float()
    if inner is not None:
        mask = mask * (r2 > inner**2).float()
    return mask[None, None]


def test_canny_of_a_square_is_its_one_pixel_boundary():
    mask = (square() > 0).float()
    assert torch.equal(canny(square()), ring(mask))


def test_canny_of_a_disc_is_a_closed_thin_contour_on_its_boundary():
    mask = disc()
    edges = canny(mask * 2 - 1)
    boundary = ring(mask)
    near = F.max_pool2d(boundary, 3, stride=1, padding=1)
    assert torch.equal(edges * near, edges)  # every edge pixel within one pixel of the boundary
    assert (edges * boundary).sum() >= 0.8 * boundary.sum()  # most of the boundary found (staircase corners may
    assert edges.sum() <= 1.25 * boundary.sum()  # fall on the dark side of a diagonal step), and the contour thin


def test_canny_hysteresis_keeps_weak_edges_only_where_joined_to_strong_ones():
    # a vertical step whose contrast fades from 1 (|grad| = 4, strong) to 0.12 (|grad| ~ 0.48, weak) down the image,
    # and a weak step of contrast 0.15 (|grad| = 0.6, between the thresholds) on its own
    contrast = torch.linspace(1.0, 0.12, 20)
    x = torch.zeros(1, 1, 20, 30)
    x[0, 0, :, 8:14] = contrast[:, None]
    x[0, 0, :, 22:] = 0.15
    magnitude = 4 * contrast
    assert (magnitude >= CANNY_HIGH).any() and ((magnitude >= CANNY_LOW) & (magnitude < CANNY_HIGH)).any()
    edges = canny(x * 2 - 1)[0, 0]
    assert torch.equal(edges[:, 8], (magnitude >= CANNY_LOW).float())  # strong and joined weak pixels kept
    assert edges[:, 20:].sum() == 0  # the weak step alone: dropped
    assert edges[:, 22].sum() == 0 and canny(x * 2 - 1, low=0.5, high=0.55)[0, 0, :, 22].sum() == 20


def test_sobel_is_the_scaled_gradient_magnitude():
    x = -torch.ones(1, 1, 8, 8)
    x[..., :, 4:] = 1  # a vertical unit step between columns 3 and 4
    expected = torch.zeros(8, 8)
    expected[:, 3:5] = 1.0  # |G_x| = 4 on both sides of the step, / 4
    assert torch.allclose(sobel(x)[0, 0], expected)
    half = -torch.ones(1, 1, 8, 8)
    half[..., :, 4:] = 0  # a step of 0.5 in intensity
    assert torch.allclose(sobel(half)[0, 0], expected * 0.5)


def test_silhouette_is_the_filled_object():
    assert torch.equal(silhouette(disc() * 2 - 1), disc())
    annulus = disc(inner=4.0)
    assert torch.equal(silhouette(annulus * 2 - 1), disc())  # the hole is filled
    open_ring = annulus.clone()
    open_ring[..., 13:15, 14:] = 0  # a channel from the hole to the border: the hole is background
    assert torch.equal(silhouette(open_ring * 2 - 1), open_ring)


def test_lowres_is_the_block_mean():
    torch.manual_seed(0)
    blocks = torch.rand(1, 1, 7, 7)
    x = blocks.repeat_interleave(4, 2).repeat_interleave(4, 3) * 2 - 1
    assert torch.allclose(lowres(x), blocks.repeat_interleave(4, 2).repeat_interleave(4, 3), atol=1e-6)
    y = torch.rand(2, 1, 28, 28) * 2 - 1
    means = ((y + 1) / 2).reshape(2, 1, 7, 4, 7, 4).mean(dim=(3, 5))
    assert torch.allclose(lowres(y)[:, :, ::4, ::4], means, atol=1e-6)


def test_scribble_is_the_canny_outline_thickened_to_three_pixels():
    outline = ring((square() > 0).float())
    assert torch.equal(scribble(square()), F.max_pool2d(outline, 3, stride=1, padding=1))


def test_colour_images_use_their_luma_and_maps_lie_in_unit_range():
    grey = square()
    rgb = grey.repeat(1, 3, 1, 1)
    for name in ANNOTATORS:
        a, b = annotate(name, grey), annotate(name, rgb)
        assert a.shape == (1, 1, 16, 16) and torch.allclose(a, b, atol=1e-6)
        assert a.min() >= 0 and a.max() <= 1


def test_unknown_kind_is_refused():
    with pytest.raises(DifflabError, match="control type must be one of"):
        annotate("depth", square())
