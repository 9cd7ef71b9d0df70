"""A DDPM-style U-Net: sinusoidal noise embedding, residual blocks with scale/shift, self-attention, skips.

Built in three stages that share one flat set of weight names: UNetEncoder (embeddings, input conv, the down levels
and their downsamplers), UNetTrunk (+ the middle block: what a noise-aware classifier or a ControlNet reuses) and
UNet (+ the decoder, which takes the skips and the middle's output, optionally with additive residuals from a
control branch: ControlNet, Zhang et al. 2023; T2I-Adapter, Mou et al. 2023).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

from difflab.errors import DifflabError
from difflab.conditioning import IMAGE_KINDS, Condition
from difflab.nets.attention import CrossAttention, SelfAttention, TextContext
from difflab.nets.embeddings import Context, NoiseEmbedding, condition_embedding, zero_last_layer


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
    # image conditions ((kind, channels) pairs; in JSON {"low_res": 1}) concatenated to the input's channels (SR3,
    # Saharia et al. 2021; Ho et al. 2021), and the noise-augmentation level as an extra embedding (Ho et al. 2021)
    concat_conditions: tuple[tuple[str, int], ...] = ()
    noise_level_embedding: bool = False

    def __post_init__(self) -> None:
        object.__setattr__(self, "channel_mult", tuple(self.channel_mult))
        object.__setattr__(self, "attention_levels", tuple(self.attention_levels))
        object.__setattr__(self, "concat_conditions", tuple(dict(self.concat_conditions).items()))
        if any(kind not in IMAGE_KINDS or channels < 1 for kind, channels in self.concat_conditions):
            raise DifflabError(f"network.concat_conditions must map image kinds ({', '.join(IMAGE_KINDS)}) to channel "
                               f"counts >= 1, got {dict(self.concat_conditions)}")
        if any(w % self.groups for w in self.widths):
            raise DifflabError(f"network: every width {list(self.widths)} must be divisible by groups={self.groups}")
        if any(not 0 <= level < len(self.channel_mult) for level in self.attention_levels):
            raise DifflabError(f"network.attention_levels must lie in 0..{len(self.channel_mult) - 1}")

    @property
    def widths(self) -> tuple[int, ...]:
        """Channels of each level, full resolution first."""
        return tuple(self.channels * m for m in self.channel_mult)

    @property
    def size_factor(self) -> int:
        """What both sides of an input must be multiples of: the U-Net halves them once per level below the first."""
        return 2 ** (len(self.channel_mult) - 1)

    @property
    def accepts(self) -> frozenset[str]:
        """The condition kinds this network takes (difflab.conditioning.CONDITION_KINDS)."""
        sizes = {"class": self.num_classes, "text": self.text_dim}
        tensors = [kind for kind, _ in self.concat_conditions] + (["noise_level"] if self.noise_level_embedding else [])
        return frozenset([kind for kind, size in sizes.items() if size is not None] + tensors)


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


class TrunkFeatures(NamedTuple):
    """What the encoder and the middle hand on: to the decoder, a classifier's pooling or a ControlNet's outputs."""

    skips: list[torch.Tensor]  # one per skip connection, in the order they are pushed (widths: skip_widths)
    h: torch.Tensor  # the middle's output
    emb: torch.Tensor  # SiLU of the noise embedding (+ class embedding, + pooled text)
    context: Context


def add_residual(name: str, h: torch.Tensor, residual: torch.Tensor) -> torch.Tensor:
    """h + residual, a control branch's additive injection; a residual of another shape names itself."""
    if residual.shape != h.shape:
        raise DifflabError(f"{name} has shape {tuple(residual.shape)}, expected {tuple(h.shape)}")
    return h + residual


class UNetEncoder(nn.Module):
    """Noise, class and text embeddings, the input conv, and the down levels with their downsamplers.

    Skip i has skip_widths[i] channels at 1/skip_strides[i] of the input's resolution (size ceil(H / stride)).
    """

    def __init__(self, config: UNetConfig):
        super().__init__()
        self.config = config
        ch = config.channels
        self.embed_dim = 4 * ch
        self.embed = NoiseEmbedding(ch, self.embed_dim, config.num_classes)
        self.text = TextContext(config.text_dim, self.embed_dim) if config.text_dim else None
        self.conv_in = nn.Conv2d(config.in_channels, ch, 3, padding=1)
        # conv_in over [x, conditions] = conv_in(x) + cond_in(conditions): the concatenated channels' own weights,
        # zero at first, so a network fine-tuned from an unconditional one starts from its output
        widths = sum(channels for _, channels in config.concat_conditions)
        self.cond_in = nn.Conv2d(widths, ch, 3, padding=1, bias=False) if widths else None
        if self.cond_in is not None:
            nn.init.zeros_(self.cond_in.weight)
        self.noise_level_embed = zero_last_layer(NoiseEmbedding(ch, self.embed_dim)) if config.noise_level_embedding \
            else None

        skip_widths, skip_strides = [ch], [1]
        self.down = nn.ModuleList()
        self.downsample = nn.ModuleList()
        c = ch
        for level, width in enumerate(config.widths):
            c_ins = [c] + [width] * (config.num_res_blocks - 1)
            self.down.append(Level(c_ins, width, self.embed_dim, config, level in config.attention_levels))
            c = width
            skip_widths += [width] * config.num_res_blocks
            skip_strides += [2**level] * config.num_res_blocks
            if level < len(config.widths) - 1:
                self.downsample.append(nn.Conv2d(c, c, 3, stride=2, padding=1))
                skip_widths.append(c)
                skip_strides.append(2 ** (level + 1))
        self.skip_widths, self.skip_strides = tuple(skip_widths), tuple(skip_strides)

    def embedding(self, x: torch.Tensor, c_noise: torch.Tensor, cond: Condition | None) -> tuple[torch.Tensor, Context]:
        """SiLU of the noise embedding plus the class embedding and pooled text, and the text tokens."""
        return condition_embedding(self.embed, self.text, c_noise, cond, x.shape[0], x.device, self.noise_level_embed)

    def concatenated(self, x: torch.Tensor, cond: Condition | None) -> torch.Tensor | None:
        """The image conditions [B, sum of channels, H, W] to concatenate to x (zeros for an absent kind or row)."""
        if self.cond_in is None:
            return None
        parts = []
        for kind, channels in self.config.concat_conditions:
            part = None if cond is None else cond.tensors.get(kind)
            if part is not None and tuple(part.value.shape[1:]) != (channels, *x.shape[2:]):
                raise DifflabError(f"condition {kind!r} must be [B, {channels}, {x.shape[2]}, {x.shape[3]}] to "
                                   f"concatenate to x, got {list(part.value.shape)}")
            parts.append(x.new_zeros(x.shape[0], channels, *x.shape[2:]) if part is None else part.value.to(x.dtype))
        return torch.cat(parts, dim=1)

    def encode(self, x: torch.Tensor, emb: torch.Tensor, context: Context,
               concatenated: torch.Tensor | None = None, hint: torch.Tensor | None = None) -> list[torch.Tensor]:
        """The skips in the order they are pushed; the last one is the middle's input. `hint`, a ControlNet's encoded
        condition image, is added to the input conv's output (Zhang et al. 2023, Sec. 3.2)."""
        h = self.conv_in(x) if concatenated is None else self.conv_in(x) + self.cond_in(concatenated)
        if hint is not None:
            h = add_residual("hint", h, hint)
        skips = [h]
        for level, stage in enumerate(self.down):
            for k in range(len(stage.blocks)):
                h = stage.run(k, h, emb, context)
                skips.append(h)
            if level < len(self.downsample):
                h = self.downsample[level](h)
                skips.append(h)
        return skips


class UNetTrunk(UNetEncoder):
    """The encoder and the middle (ResBlock, self-attention, cross-attention to the text, ResBlock): the U-Net's
    downsampling trunk that a noise-aware classifier pools (Dhariwal & Nichol 2021) and a ControlNet copies."""

    def __init__(self, config: UNetConfig):
        super().__init__(config)
        c = self.skip_widths[-1]
        self.mid1 = ResBlock(c, c, self.embed_dim, config.groups, config.dropout)
        self.mid_attn = SelfAttention(c, config.head_dim, config.groups)
        self.mid_cross_attn = (CrossAttention(c, config.text_dim, config.head_dim, config.groups) if config.text_dim
                               else None)
        self.mid2 = ResBlock(c, c, self.embed_dim, config.groups, config.dropout)

    def middle(self, h: torch.Tensor, emb: torch.Tensor, context: Context) -> torch.Tensor:
        h = self.mid_attn(self.mid1(h, emb))
        if self.mid_cross_attn is not None:
            h = self.mid_cross_attn(h, *context)
        return self.mid2(h, emb)

    def features(self, x: torch.Tensor, c_noise: torch.Tensor, cond: Condition | None = None) -> TrunkFeatures:
        emb, context = self.embedding(x, c_noise, cond)
        skips = self.encode(x, emb, context, self.concatenated(x, cond))
        return TrunkFeatures(skips, self.middle(skips[-1], emb, context), emb, context)


class UNet(UNetTrunk):
    """net(x_t [B, C, H, W], c_noise [B], cond) -> prediction [B, C_out, H, W]; any H, W.

    c_noise is the noise level as the network sees it (for VP models the continuous timestep). cond may carry class
    labels (embedding added to the noise embedding) and text (pooled vector added to the noise embedding; tokens
    attended to by cross-attention at the attention levels and in the middle).
    """

    def __init__(self, config: UNetConfig):
        super().__init__(config)
        skip_widths = list(self.skip_widths)
        c = skip_widths[-1]
        self.up = nn.ModuleList()
        self.upsample = nn.ModuleList()
        for level in reversed(range(len(config.widths))):
            width = config.widths[level]
            c_ins = []
            for _ in range(config.num_res_blocks + 1):
                c_ins.append(c + skip_widths.pop())
                c = width
            self.up.append(Level(c_ins, width, self.embed_dim, config, level in config.attention_levels))
            if level > 0:
                self.upsample.append(nn.Conv2d(c, c, 3, padding=1))

        self.norm_out = nn.GroupNorm(config.groups, c)
        out_channels = (config.out_channels or config.in_channels) * (2 if config.learned_variance else 1)
        self.conv_out = nn.Conv2d(c, out_channels, 3, padding=1)
        nn.init.zeros_(self.conv_out.weight)
        nn.init.zeros_(self.conv_out.bias)

    def copy_trunk(self) -> UNetTrunk:
        """A separate UNetTrunk holding a copy of this network's encoder and middle weights (how a ControlNet's
        control branch starts, Zhang et al. 2023), on the same device and in the same dtype."""
        with torch.device("meta"):
            trunk = UNetTrunk(self.config)
        names = trunk.state_dict().keys()
        trunk.load_state_dict({k: v.clone() for k, v in self.state_dict().items() if k in names}, assign=True)
        return trunk

    def decode(self, h: torch.Tensor, skips: list[torch.Tensor], emb: torch.Tensor, context: Context) -> torch.Tensor:
        """From the middle's output, taking the skips last-first."""
        skips = list(skips)
        for i, stage in enumerate(self.up):
            for k in range(len(stage.blocks)):
                h = stage.run(k, torch.cat([h, skips.pop()], dim=1), emb, context)
            if i < len(self.upsample):
                h = F.interpolate(h, size=skips[-1].shape[-2:], mode="nearest")
                h = self.upsample[i](h)
        return self.conv_out(F.silu(self.norm_out(h)))

    def forward(self, x: torch.Tensor, c_noise: torch.Tensor, cond: Condition | None = None, *,
                down_residuals: Sequence[torch.Tensor] | None = None,
                mid_residual: torch.Tensor | None = None) -> torch.Tensor:
        """down_residuals (one per skip, shaped like it) and mid_residual are added to the skips and to the
        middle's output before the decoder uses them (diffusers' down_block_additional_residuals and
        mid_block_additional_residual)."""
        skips, h, emb, context = self.features(x, c_noise, cond)
        if down_residuals is not None:
            if len(down_residuals) != len(skips):
                raise DifflabError(f"down_residuals: expected {len(skips)} tensors, one per skip connection, "
                                   f"got {len(down_residuals)}")
            skips = [add_residual(f"down_residuals[{i}]", s, r) for i, (s, r) in enumerate(zip(skips, down_residuals))]
        if mid_residual is not None:
            h = add_residual("mid_residual", h, mid_residual)
        return self.decode(h, skips, emb, context)
