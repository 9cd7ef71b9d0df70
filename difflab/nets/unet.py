"""A DDPM-style U-Net: sinusoidal time embedding, residual blocks with scale/shift, self-attention, skips."""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from difflab.errors import DifflabError
from difflab.nets.embeddings import TimestepEmbedding


@dataclass(frozen=True)
class UNetConfig:
    in_channels: int = 1
    out_channels: int | None = None  # defaults to in_channels
    channels: int = 32
    channel_mult: tuple[int, ...] = (1, 2, 2)
    num_res_blocks: int = 2
    attention_levels: tuple[int, ...] = (2,)  # levels (0 = full resolution) with self-attention
    head_dim: int = 32
    groups: int = 8
    dropout: float = 0.0
    num_classes: int | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "channel_mult", tuple(self.channel_mult))
        object.__setattr__(self, "attention_levels", tuple(self.attention_levels))
        widths = [self.channels * m for m in self.channel_mult]
        if any(w % self.groups for w in widths):
            raise DifflabError(f"network: every width {widths} must be divisible by groups={self.groups}")
        if any(not 0 <= level < len(self.channel_mult) for level in self.attention_levels):
            raise DifflabError(f"network.attention_levels must lie in 0..{len(self.channel_mult) - 1}")


class ResBlock(nn.Module):
    """GroupNorm-SiLU-conv twice; the embedding sets a per-channel scale and shift (Dhariwal & Nichol 2021)."""

    def __init__(self, c_in: int, c_out: int, embed_dim: int, groups: int, dropout: float):
        super().__init__()
        self.norm1 = nn.GroupNorm(groups, c_in)
        self.conv1 = nn.Conv2d(c_in, c_out, 3, padding=1)
        self.emb = nn.Linear(embed_dim, 2 * c_out)
        self.norm2 = nn.GroupNorm(groups, c_out)
        self.dropout = nn.Dropout(dropout)
        self.conv2 = nn.Conv2d(c_out, c_out, 3, padding=1)
        nn.init.zeros_(self.conv2.weight)
        nn.init.zeros_(self.conv2.bias)
        self.skip = nn.Conv2d(c_in, c_out, 1) if c_in != c_out else nn.Identity()

    def forward(self, x: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:
        h = self.conv1(F.silu(self.norm1(x)))
        scale, shift = self.emb(emb)[:, :, None, None].chunk(2, dim=1)
        h = self.norm2(h) * (1 + scale) + shift  # h = GN(h) (1 + s) + b
        h = self.conv2(self.dropout(F.silu(h)))
        return self.skip(x) + h


class SelfAttention(nn.Module):
    """Multi-head self-attention over the H*W positions through scaled_dot_product_attention."""

    def __init__(self, channels: int, head_dim: int, groups: int):
        super().__init__()
        self.heads = max(1, channels // head_dim)
        self.norm = nn.GroupNorm(groups, channels)
        self.qkv = nn.Conv2d(channels, 3 * channels, 1)
        self.proj = nn.Conv2d(channels, channels, 1)
        nn.init.zeros_(self.proj.weight)
        nn.init.zeros_(self.proj.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B, C, H, W = x.shape
        qkv = self.qkv(self.norm(x)).reshape(B, 3, self.heads, C // self.heads, H * W)
        q, k, v = qkv.transpose(-1, -2).unbind(1)  # each [B, heads, HW, C/heads]
        h = F.scaled_dot_product_attention(q, k, v)  # softmax(q k^T / sqrt(d)) v
        return x + self.proj(h.transpose(-1, -2).reshape(B, C, H, W))


class Level(nn.Module):
    """Residual blocks of one resolution, each optionally followed by self-attention."""

    def __init__(self, c_ins: list[int], c_out: int, embed_dim: int, config: UNetConfig, attention: bool):
        super().__init__()
        self.blocks = nn.ModuleList(ResBlock(c, c_out, embed_dim, config.groups, config.dropout) for c in c_ins)
        self.attns = nn.ModuleList(
            SelfAttention(c_out, config.head_dim, config.groups) if attention else nn.Identity() for _ in c_ins
        )


class UNet(nn.Module):
    """net(x_t [B, C, H, W], timestep [B], labels [B] | None) -> prediction [B, C_out, H, W]; any H, W."""

    def __init__(self, config: UNetConfig):
        super().__init__()
        self.config = config
        ch = config.channels
        embed_dim = 4 * ch
        widths = [ch * m for m in config.channel_mult]
        self.embed = TimestepEmbedding(ch, embed_dim, config.num_classes)
        self.conv_in = nn.Conv2d(config.in_channels, ch, 3, padding=1)

        skip_widths = [ch]
        self.down = nn.ModuleList()
        self.downsample = nn.ModuleList()
        c = ch
        for level, width in enumerate(widths):
            c_ins = [c] + [width] * (config.num_res_blocks - 1)
            self.down.append(Level(c_ins, width, embed_dim, config, level in config.attention_levels))
            c = width
            skip_widths += [width] * config.num_res_blocks
            if level < len(widths) - 1:
                self.downsample.append(nn.Conv2d(c, c, 3, stride=2, padding=1))
                skip_widths.append(c)

        self.mid1 = ResBlock(c, c, embed_dim, config.groups, config.dropout)
        self.mid_attn = SelfAttention(c, config.head_dim, config.groups)
        self.mid2 = ResBlock(c, c, embed_dim, config.groups, config.dropout)

        self.up = nn.ModuleList()
        self.upsample = nn.ModuleList()
        for level in reversed(range(len(widths))):
            width = widths[level]
            c_ins = []
            for _ in range(config.num_res_blocks + 1):
                c_ins.append(c + skip_widths.pop())
                c = width
            self.up.append(Level(c_ins, width, embed_dim, config, level in config.attention_levels))
            if level > 0:
                self.upsample.append(nn.Conv2d(c, c, 3, padding=1))

        self.norm_out = nn.GroupNorm(config.groups, c)
        self.conv_out = nn.Conv2d(c, config.out_channels or config.in_channels, 3, padding=1)
        nn.init.zeros_(self.conv_out.weight)
        nn.init.zeros_(self.conv_out.bias)

    def forward(self, x: torch.Tensor, timestep: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        emb = F.silu(self.embed(timestep, labels))
        h = self.conv_in(x)
        skips = [h]
        for level, stage in enumerate(self.down):
            for block, attn in zip(stage.blocks, stage.attns):
                h = attn(block(h, emb))
                skips.append(h)
            if level < len(self.downsample):
                h = self.downsample[level](h)
                skips.append(h)
        h = self.mid2(self.mid_attn(self.mid1(h, emb)), emb)
        for i, stage in enumerate(self.up):
            for block, attn in zip(stage.blocks, stage.attns):
                h = attn(block(torch.cat([h, skips.pop()], dim=1), emb))
            if i < len(self.upsample):
                h = F.interpolate(h, size=skips[-1].shape[-2:], mode="nearest")
                h = self.upsample[i](h)
        return self.conv_out(F.silu(self.norm_out(h)))
