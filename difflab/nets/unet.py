"""A DDPM-style U-Net: sinusoidal time embedding, residual blocks with scale/shift, self-attention, skips."""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from difflab.errors import DifflabError
from difflab.conditioning import Condition
from difflab.nets.attention import CrossAttention, SelfAttention, TextContext
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
    text_dim: int | None = None  # width of the text encoder's tokens; enables cross-attention
    learned_variance: bool = False  # doubles the output channels: [prediction, v] (Nichol & Dhariwal 2021, Eq. 15)

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


class Level(nn.Module):
    """Residual blocks of one resolution, each optionally followed by self-attention and cross-attention."""

    def __init__(self, c_ins: list[int], c_out: int, embed_dim: int, config: UNetConfig, attention: bool):
        super().__init__()
        self.blocks = nn.ModuleList(ResBlock(c, c_out, embed_dim, config.groups, config.dropout) for c in c_ins)
        self.attns = nn.ModuleList(
            SelfAttention(c_out, config.head_dim, config.groups) if attention else nn.Identity() for _ in c_ins
        )
        text = attention and config.text_dim is not None
        self.cross_attns = nn.ModuleList(
            CrossAttention(c_out, config.text_dim, config.head_dim, config.groups) for _ in (c_ins if text else [])
        )

    def run(self, k: int, h: torch.Tensor, emb: torch.Tensor, context) -> torch.Tensor:
        """Block k: residual block, self-attention, then cross-attention to the text if there is any."""
        h = self.attns[k](self.blocks[k](h, emb))
        return self.cross_attns[k](h, *context) if len(self.cross_attns) else h


class UNet(nn.Module):
    """net(x_t [B, C, H, W], timestep [B], cond) -> prediction [B, C_out, H, W]; any H, W.

    cond may carry class labels (embedding added to the time embedding) and text (pooled vector added to the
    time embedding; tokens attended to by cross-attention at the attention levels and in the middle).
    """

    def __init__(self, config: UNetConfig):
        super().__init__()
        self.config = config
        ch = config.channels
        embed_dim = 4 * ch
        widths = [ch * m for m in config.channel_mult]
        self.embed = TimestepEmbedding(ch, embed_dim, config.num_classes)
        self.text = TextContext(config.text_dim, embed_dim) if config.text_dim else None
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
        self.mid_cross_attn = CrossAttention(c, config.text_dim, config.head_dim, config.groups) if config.text_dim else None
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
        out_channels = (config.out_channels or config.in_channels) * (2 if config.learned_variance else 1)
        self.conv_out = nn.Conv2d(c, out_channels, 3, padding=1)
        nn.init.zeros_(self.conv_out.weight)
        nn.init.zeros_(self.conv_out.bias)

    def forward(self, x: torch.Tensor, timestep: torch.Tensor, cond: Condition | None = None) -> torch.Tensor:
        emb = self.embed(timestep, None if cond is None else cond.labels)
        context = None
        if self.text is not None:
            tokens, mask, pooled = self.text(None if cond is None else cond.text, x.shape[0], x.device, emb.dtype)
            emb, context = emb + pooled, (tokens, mask)
        emb = F.silu(emb)
        h = self.conv_in(x)
        skips = [h]
        for level, stage in enumerate(self.down):
            for k in range(len(stage.blocks)):
                h = stage.run(k, h, emb, context)
                skips.append(h)
            if level < len(self.downsample):
                h = self.downsample[level](h)
                skips.append(h)
        h = self.mid_attn(self.mid1(h, emb))
        if self.mid_cross_attn is not None:
            h = self.mid_cross_attn(h, *context)
        h = self.mid2(h, emb)
        for i, stage in enumerate(self.up):
            for k in range(len(stage.blocks)):
                h = stage.run(k, torch.cat([h, skips.pop()], dim=1), emb, context)
            if i < len(self.upsample):
                h = F.interpolate(h, size=skips[-1].shape[-2:], mode="nearest")
                h = self.upsample[i](h)
        return self.conv_out(F.silu(self.norm_out(h)))
