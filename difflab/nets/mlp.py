"""A residual MLP denoiser for low-dimensional (toy) data."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from difflab.conditioning import Condition
from difflab.nets.embeddings import NoiseEmbedding


@dataclass(frozen=True)
class MLPConfig:
    dim: int = 2
    hidden: int = 128
    depth: int = 3
    num_classes: int | None = None
    learned_variance: bool = False  # doubles the output: [prediction, v] (Nichol & Dhariwal 2021, Eq. 15)

    @property
    def accepts(self) -> frozenset[str]:
        """The condition kinds this network takes (difflab.conditioning.CONDITION_KINDS)."""
        return frozenset() if self.num_classes is None else frozenset({"class"})


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
    """net(x_t [B, D], c_noise [B], cond) -> prediction [B, D]; cond may carry class labels."""

    def __init__(self, config: MLPConfig):
        super().__init__()
        self.config = config
        self.embed = NoiseEmbedding(config.hidden, config.hidden, config.num_classes)
        self.inp = nn.Linear(config.dim, config.hidden)
        self.blocks = nn.ModuleList(MLPBlock(config.hidden) for _ in range(config.depth))
        out_dim = config.dim * (2 if config.learned_variance else 1)
        self.out = nn.Linear(config.hidden, out_dim)  # no final norm: the residual stream keeps the input's scale

    def forward(self, x: torch.Tensor, c_noise: torch.Tensor, cond: Condition | None = None) -> torch.Tensor:
        emb = nn.functional.silu(self.embed(c_noise, None if cond is None else cond.labels))
        h = self.inp(x)
        for block in self.blocks:
            h = block(h, emb)
        return self.out(h)
