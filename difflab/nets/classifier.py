"""A noise-aware classifier p_phi(y | x_t, t): the encoder half of the U-Net, pooled, with a linear head
(Dhariwal & Nichol 2021, Sec. 4 and Appendix: the downsampling trunk of the diffusion U-Net with attention pooling)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

from difflab.errors import DifflabError
from difflab.nets.attention import SelfAttention
from difflab.nets.embeddings import TimestepEmbedding
from difflab.nets.unet import ResBlock

Pool = Literal["attention", "mean"]


@dataclass(frozen=True)
class ClassifierConfig:
    in_channels: int = 1
    num_classes: int = 10
    channels: int = 24
    channel_mult: tuple[int, ...] = (1, 2, 2)
    num_res_blocks: int = 1
    attention_levels: tuple[int, ...] = (2,)  # levels (0 = full resolution) with self-attention
    head_dim: int = 24
    groups: int = 8
    dropout: float = 0.0
    pool: Pool = "attention"

    def __post_init__(self) -> None:
        object.__setattr__(self, "channel_mult", tuple(self.channel_mult))
        object.__setattr__(self, "attention_levels", tuple(self.attention_levels))
        widths = [self.channels * m for m in self.channel_mult]
        if any(w % self.groups for w in widths):
            raise DifflabError(f"classifier: every width {widths} must be divisible by groups={self.groups}")
        if any(w % max(1, w // self.head_dim) for w in widths):
            raise DifflabError(f"classifier: every width {widths} must split into heads of about head_dim="
                               f"{self.head_dim} channels")
        if any(not 0 <= level < len(self.channel_mult) for level in self.attention_levels):
            raise DifflabError(f"classifier.attention_levels must lie in 0..{len(self.channel_mult) - 1}")
        if self.num_classes < 2:
            raise DifflabError(f"classifier.num_classes must be >= 2, got {self.num_classes}")
        if self.pool not in ("attention", "mean"):
            raise DifflabError(f"classifier.pool must be attention or mean, got {self.pool!r}")


class AttentionPool(nn.Module):
    """[B, C, H, W] -> [B, C]: multi-head attention of one query, the mean feature, over all H*W positions (ADM's /
    CLIP's attention pooling, without the fixed-size positional embedding, so any H, W works); the head that
    follows is the output projection."""

    def __init__(self, channels: int, head_dim: int, groups: int):
        super().__init__()
        self.heads = max(1, channels // head_dim)
        self.norm = nn.GroupNorm(groups, channels)
        self.q = nn.Linear(channels, channels)
        self.kv = nn.Linear(channels, 2 * channels)

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        B, C = h.shape[:2]
        tokens = F.silu(self.norm(h)).flatten(2).transpose(1, 2)  # [B, HW, C]
        q = self.q(tokens.mean(1, keepdim=True)).reshape(B, 1, self.heads, C // self.heads).transpose(1, 2)
        k, v = self.kv(tokens).reshape(B, -1, 2, self.heads, C // self.heads).permute(2, 0, 3, 1, 4)
        pooled = F.scaled_dot_product_attention(q, k, v)  # softmax(q k^T / sqrt(d)) v, [B, heads, 1, C/heads]
        return pooled.reshape(B, C)


class MeanPool(nn.Module):
    """[B, C, H, W] -> [B, C]: GroupNorm, SiLU, mean over the positions."""

    def __init__(self, channels: int, groups: int):
        super().__init__()
        self.norm = nn.GroupNorm(groups, channels)

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        return F.silu(self.norm(h)).mean(dim=(2, 3))


class NoiseAwareClassifier(nn.Module):
    """net(x_t [B, C, H, W], timestep [B]) -> class logits [B, num_classes]; any H, W."""

    def __init__(self, config: ClassifierConfig):
        super().__init__()
        self.config = config
        ch = config.channels
        embed_dim = 4 * ch
        self.embed = TimestepEmbedding(ch, embed_dim)
        self.conv_in = nn.Conv2d(config.in_channels, ch, 3, padding=1)
        self.blocks = nn.ModuleList()
        c = ch
        widths = [ch * m for m in config.channel_mult]
        for level, width in enumerate(widths):
            for _ in range(config.num_res_blocks):
                self.blocks.append(ResBlock(c, width, embed_dim, config.groups, config.dropout))
                c = width
                if level in config.attention_levels:
                    self.blocks.append(SelfAttention(c, config.head_dim, config.groups))
            if level < len(widths) - 1:
                self.blocks.append(nn.Conv2d(c, c, 3, stride=2, padding=1))
        self.mid = nn.ModuleList([ResBlock(c, c, embed_dim, config.groups, config.dropout),
                                  SelfAttention(c, config.head_dim, config.groups),
                                  ResBlock(c, c, embed_dim, config.groups, config.dropout)])
        self.pool = (AttentionPool(c, config.head_dim, config.groups) if config.pool == "attention"
                     else MeanPool(c, config.groups))
        self.head = nn.Linear(c, config.num_classes)

    def forward(self, x: torch.Tensor, timestep: torch.Tensor) -> torch.Tensor:
        emb = F.silu(self.embed(timestep))
        h = self.conv_in(x)
        for block in [*self.blocks, *self.mid]:
            h = block(h, emb) if isinstance(block, ResBlock) else block(h)
        return self.head(self.pool(h))
