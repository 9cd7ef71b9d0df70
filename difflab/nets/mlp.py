"""A residual MLP denoiser for low-dimensional (toy) data."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from difflab.nets.embeddings import TimestepEmbedding


@dataclass(frozen=True)
class MLPConfig:
    dim: int = 2
    hidden: int = 128
    depth: int = 3
    num_classes: int | None = None


class MLPBlock(nn.Module):
    def __init__(self, hidden: int):
        super().__init__()
        self.norm = nn.LayerNorm(hidden)
        self.fc1 = nn.Linear(hidden, hidden)
        self.fc2 = nn.Linear(hidden, hidden)
        self.emb = nn.Linear(hidden, hidden)

    def forward(self, h: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:
        return h + self.fc2(nn.functional.silu(self.fc1(self.norm(h)) + self.emb(emb)))


class MLPDenoiserNet(nn.Module):
    """net(x_t [B, D], timestep [B], labels) -> prediction [B, D]."""

    def __init__(self, config: MLPConfig):
        super().__init__()
        self.config = config
        self.embed = TimestepEmbedding(config.hidden, config.hidden, config.num_classes)
        self.inp = nn.Linear(config.dim, config.hidden)
        self.blocks = nn.ModuleList(MLPBlock(config.hidden) for _ in range(config.depth))
        self.out = nn.Linear(config.hidden, config.dim)  # no final norm: the residual stream keeps the input's scale

    def forward(self, x: torch.Tensor, timestep: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        emb = nn.functional.silu(self.embed(timestep, labels))
        h = self.inp(x)
        for block in self.blocks:
            h = block(h, emb)
        return self.out(h)
