"""Two-dimensional toy distributions for fast experiments and tests."""

from __future__ import annotations

import math

import torch

from difflab.data.dataset import Dataset
from difflab.errors import DifflabError

TOY_SIZE = 50_000


def swissroll(n: int, generator: torch.Generator) -> torch.Tensor:
    # r = theta on theta ~ U(1.5 pi, 4.5 pi), scaled to unit-ish variance
    theta = 1.5 * math.pi * (1 + 2 * torch.rand(n, generator=generator, dtype=torch.float64))
    points = torch.stack([theta * torch.cos(theta), theta * torch.sin(theta)], 1) / 5.0
    return points + 0.05 * torch.randn(n, 2, generator=generator, dtype=torch.float64)


def eight_gaussians(n: int, generator: torch.Generator) -> torch.Tensor:
    # eight modes on the circle of radius 2, std 0.1 each
    k = torch.randint(0, 8, (n,), generator=generator)
    angle = k.double() * (2 * math.pi / 8)
    centers = 2.0 * torch.stack([torch.cos(angle), torch.sin(angle)], 1)
    return centers + 0.1 * torch.randn(n, 2, generator=generator, dtype=torch.float64)


def checkerboard(n: int, generator: torch.Generator) -> torch.Tensor:
    # uniform on the black squares of a 4x4 board over [-2, 2]^2
    x1 = 4 * torch.rand(n, generator=generator, dtype=torch.float64) - 2
    x2 = torch.rand(n, generator=generator, dtype=torch.float64) - torch.randint(0, 2, (n,), generator=generator) * 2.0
    x2 = x2 + torch.floor(x1) % 2
    return torch.stack([x1, x2], 1)


def moons(n: int, generator: torch.Generator) -> torch.Tensor:
    # two interleaved half circles, centred, with Gaussian noise of std 0.05
    upper = torch.rand(n, generator=generator) < 0.5
    angle = math.pi * torch.rand(n, generator=generator, dtype=torch.float64)
    x = torch.where(upper, torch.cos(angle), 1 - torch.cos(angle)) - 0.5
    y = torch.where(upper, torch.sin(angle), 0.5 - torch.sin(angle)) - 0.25
    return torch.stack([x, y], 1) * 1.5 + 0.05 * torch.randn(n, 2, generator=generator, dtype=torch.float64)


TOY_SETS = {"swissroll": swissroll, "8gaussians": eight_gaussians, "checkerboard": checkerboard, "moons": moons}


def sample_toy(name: str, n: int, generator: torch.Generator) -> torch.Tensor:
    """n fresh points of a named toy distribution, float64 [n, 2]."""
    if name not in TOY_SETS:
        raise DifflabError(f"unknown toy data set {name!r}; choose from {', '.join(TOY_SETS)}")
    return TOY_SETS[name](n, generator)


def load_toy(name: str, seed: int = 0, n: int = TOY_SIZE) -> Dataset:
    """A fixed draw of `n` points (float32 [n, 2]) from a toy distribution."""
    generator = torch.Generator().manual_seed(seed)
    return Dataset(name=f"toy:{name}", kind="points", data=sample_toy(name, n, generator).float())
