"""Noise-level embeddings shared by the networks."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from difflab.conditioning import NULL_LABEL, Condition

Context = tuple[torch.Tensor, torch.Tensor] | None  # text tokens [B, L, D_text] and mask [B, L] for cross-attention


def sinusoidal_embedding(c_noise: torch.Tensor, dim: int, max_period: float = 10000.0) -> torch.Tensor:
    # Vaswani et al. 2017 / Ho et al. 2020: [cos(c w_i), sin(c w_i)], w_i = max_period^(-i / (dim/2))
    half = dim // 2
    freqs = torch.exp(-math.log(max_period) * torch.arange(half, device=c_noise.device, dtype=torch.float32) / half)
    args = c_noise.float()[:, None] * freqs[None]
    return torch.cat([torch.cos(args), torch.sin(args)], dim=1)


class NoiseEmbedding(nn.Module):
    """Sinusoidal features of the noise input c_noise (for VP models the continuous timestep) through a two-layer
    MLP, plus an optional class embedding.

    The class table has num_classes + 1 rows; the last one is the learned null label (NULL_LABEL or no labels).
    """

    def __init__(self, base_dim: int, embed_dim: int, num_classes: int | None = None):
        super().__init__()
        self.base_dim = base_dim
        self.mlp = nn.Sequential(nn.Linear(base_dim, embed_dim), nn.SiLU(), nn.Linear(embed_dim, embed_dim))
        self.num_classes = num_classes
        self.class_embedding = nn.Embedding(num_classes + 1, embed_dim) if num_classes else None
        if self.class_embedding is not None:  # zero: adding classes to a trained network starts from its output
            nn.init.zeros_(self.class_embedding.weight)

    def forward(self, c_noise: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        emb = self.mlp(sinusoidal_embedding(c_noise, self.base_dim).to(self.mlp[0].weight.dtype))
        if self.class_embedding is not None:
            if labels is None:
                labels = torch.full((c_noise.shape[0],), NULL_LABEL, device=c_noise.device)
            emb = emb + self.class_embedding(torch.where(labels == NULL_LABEL, self.num_classes, labels))
        return emb


def zero_last_layer(embed: NoiseEmbedding) -> NoiseEmbedding:
    """`embed` with its output layer zeroed: an embedding added to a trained network starts as no change."""
    nn.init.zeros_(embed.mlp[2].weight)
    nn.init.zeros_(embed.mlp[2].bias)
    return embed


def noise_level_input(cond: Condition | None, batch: int, device) -> torch.Tensor:
    """c_aug = 1000 s for a noise-augmentation level s in data units (timestep-like, for the sinusoids); level 0
    (no augmentation) where the condition or its row is absent."""
    part = None if cond is None else cond.tensors.get("noise_level")
    if part is None:
        return torch.zeros(batch, device=device)
    return 1000 * part.value.float() * part.present  # c_aug = 1000 s, 0 on null rows


def condition_embedding(embed: NoiseEmbedding, text: nn.Module | None, c_noise: torch.Tensor, cond: Condition | None,
                        batch: int, device, noise_level: NoiseEmbedding | None = None) -> tuple[torch.Tensor, Context]:
    """SiLU of the noise embedding plus the class embedding, the pooled text and the noise-augmentation level's
    embedding, and the text tokens for cross-attention (None without a text context,
    difflab.nets.attention.TextContext)."""
    emb = embed(c_noise, None if cond is None else cond.labels)
    if noise_level is not None:
        emb = emb + noise_level(noise_level_input(cond, batch, device))
    context = None
    if text is not None:
        tokens, mask, pooled = text(None if cond is None else cond.text, batch, device, emb.dtype)
        emb, context = emb + pooled, (tokens, mask)
    return F.silu(emb), context
