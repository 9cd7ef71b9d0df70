"""A Diffusion Transformer (Peebles & Xie 2023, "Scalable Diffusion Models with Transformers").

The image is cut into p x p patches, each a token with a fixed 2-D sin-cos position; transformer blocks are
conditioned by adaLN-Zero on the noise embedding plus the class embedding and the pooled text, and can attend to the
text tokens; a final adaLN-modulated linear layer maps each token back to its patch. Modulations and the final layer
start at zero, so a fresh DiT outputs zeros and every block is the identity on its residual stream.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from difflab.conditioning import Condition
from difflab.errors import DifflabError
from difflab.nets.attention import TextContext
from difflab.nets.embeddings import Context, NoiseEmbedding, condition_embedding, sinusoidal_embedding


@dataclass(frozen=True)
class DiTConfig:
    in_channels: int = 1
    out_channels: int | None = None  # defaults to in_channels
    patch_size: int = 4  # p: must divide the input's height and width
    hidden_size: int = 128  # D, the width of every token
    depth: int = 6  # N, the number of DiT blocks
    num_heads: int = 4
    mlp_ratio: float = 4.0
    num_classes: int | None = None
    text_dim: int | None = None  # width of the text encoder's tokens; the pooled text joins the adaLN condition
    text_cross_attention: bool = True  # with text_dim: each block also attends to the text tokens
    learned_variance: bool = False  # doubles the output channels: [prediction, v] (Nichol & Dhariwal 2021, Eq. 15)

    def __post_init__(self) -> None:
        for name in ("in_channels", "patch_size", "hidden_size", "depth", "num_heads"):
            if getattr(self, name) <= 0:
                raise DifflabError(f"network.{name} must be > 0, got {getattr(self, name)}")
        if self.hidden_size % self.num_heads:
            raise DifflabError(f"network.hidden_size {self.hidden_size} must be divisible by "
                               f"num_heads={self.num_heads}")
        if self.hidden_size % 4:  # a quarter each for sin and cos of rows and of columns
            raise DifflabError(f"network.hidden_size must be divisible by 4 (2-D sin-cos positions), "
                               f"got {self.hidden_size}")
        if not self.mlp_ratio > 0:
            raise DifflabError(f"network.mlp_ratio must be > 0, got {self.mlp_ratio}")

    @property
    def accepts(self) -> frozenset[str]:
        """The condition kinds this network takes (difflab.conditioning.CONDITION_KINDS)."""
        sizes = {"class": self.num_classes, "text": self.text_dim}
        return frozenset(kind for kind, size in sizes.items() if size is not None)


# Named sizes, scaled down from the paper's Table 1 (S: 12 x 384, B: 12 x 768) for 28x28 images on a CPU; head width 32
DIT_SIZES = {
    "T": {"depth": 4, "hidden_size": 64, "num_heads": 2},
    "S": {"depth": 6, "hidden_size": 128, "num_heads": 4},
    "B": {"depth": 8, "hidden_size": 192, "num_heads": 6},
}


def named_size(name: str) -> dict[str, int]:
    """The DiTConfig fields of a named model, e.g. "DiT-S/4": size S (depth, width, heads) with patch size 4."""
    match = re.fullmatch(r"DiT-(\w+)/(\d+)", name)
    if match is None or match[1] not in DIT_SIZES:
        raise DifflabError(f"DiT name must be DiT-SIZE/PATCH with SIZE one of {', '.join(DIT_SIZES)}, got {name!r}")
    return {**DIT_SIZES[match[1]], "patch_size": int(match[2])}


def patchify(x: torch.Tensor, p: int) -> torch.Tensor:
    """[B, C, H, W] -> [B, (H/p)(W/p), p*p*C]: row-major patches, each flattened as (row, column, channel)."""
    B, C, H, W = x.shape
    if H % p or W % p:
        raise DifflabError(f"network.patch_size {p} must divide the input's height and width, got {H}x{W}")
    x = x.reshape(B, C, H // p, p, W // p, p)
    return x.permute(0, 2, 4, 3, 5, 1).reshape(B, (H // p) * (W // p), p * p * C)


def unpatchify(tokens: torch.Tensor, p: int, height: int, width: int) -> torch.Tensor:
    """The inverse of patchify: [B, (H/p)(W/p), p*p*C] -> [B, C, H, W]."""
    B, _, D = tokens.shape
    x = tokens.reshape(B, height // p, width // p, p, p, D // (p * p))
    return x.permute(0, 5, 1, 3, 2, 4).reshape(B, -1, height, width)


def sincos_positions(rows: int, cols: int, dim: int, device=None) -> torch.Tensor:
    """[rows * cols, dim] fixed 2-D position embedding: 1-D sin-cos of the row in one half, of the column in the
    other (Vaswani et al. 2017, Sec. 3.5, per axis; as in MAE and DiT)."""
    row = sinusoidal_embedding(torch.arange(rows, device=device), dim // 2)
    col = sinusoidal_embedding(torch.arange(cols, device=device), dim // 2)
    return torch.cat([row[:, None].expand(-1, cols, -1), col[None].expand(rows, -1, -1)], dim=-1).reshape(-1, dim)


def modulate(x: torch.Tensor, shift: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    # adaLN (Peebles & Xie 2023, Sec. 3.2): x (1 + scale) + shift, scale and shift regressed from the condition
    return x * (1 + scale) + shift


def linear(d_in: int, d_out: int, *, zero: bool = False) -> nn.Linear:
    """A linear layer with zero bias and Xavier-uniform weights (DiT's initialisation of its transformer layers), or
    zero weights (the "Zero" of adaLN-Zero: the layer starts as a no-op)."""
    layer = nn.Linear(d_in, d_out)
    (nn.init.zeros_ if zero else nn.init.xavier_uniform_)(layer.weight)
    nn.init.zeros_(layer.bias)
    return layer


class Attention(nn.Module):
    """Multi-head attention of tokens [B, T, D] to a context [B, L, D_ctx] (the tokens themselves when none is
    given) through scaled_dot_product_attention; a mask [B, L] keeps the context's real tokens only. zero_proj
    starts the output projection at zero."""

    def __init__(self, dim: int, heads: int, context_dim: int | None = None, zero_proj: bool = False):
        super().__init__()
        self.heads = heads
        self.q = linear(dim, dim)
        self.kv = linear(context_dim or dim, 2 * dim)
        self.proj = linear(dim, dim, zero=zero_proj)

    def forward(self, h: torch.Tensor, context: torch.Tensor | None = None,
                mask: torch.Tensor | None = None) -> torch.Tensor:
        B, T, D = h.shape
        context = h if context is None else context
        q = self.q(h).reshape(B, T, self.heads, D // self.heads).transpose(1, 2)
        k, v = self.kv(context).reshape(B, context.shape[1], 2, self.heads, D // self.heads).permute(2, 0, 3, 1, 4)
        # Attention(Q, K, V) = softmax(Q K^T / sqrt(d)) V (Vaswani et al. 2017, Eq. 1)
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=None if mask is None else mask[:, None, None, :])
        return self.proj(out.transpose(1, 2).reshape(B, T, D))


class TextCrossAttention(nn.Module):
    """h + Attention(LN(h), text tokens), its output projection zero at the start (so it starts as a no-op)."""

    def __init__(self, dim: int, heads: int, text_dim: int):
        super().__init__()
        self.norm = nn.LayerNorm(dim, eps=1e-6)
        self.attn = Attention(dim, heads, text_dim, zero_proj=True)

    def forward(self, h: torch.Tensor, tokens: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        return h + self.attn(self.norm(h), tokens, mask)




class DiTBlock(nn.Module):
    """Self-attention and a GELU MLP, each on an adaLN-modulated LayerNorm of the tokens and scaled by a gate, all
    six regressed from the condition and zero at the start (adaLN-Zero, Peebles & Xie 2023, Fig. 3); optionally
    cross-attention to the text between the two."""

    def __init__(self, config: DiTConfig):
        super().__init__()
        D = config.hidden_size
        self.norm1 = nn.LayerNorm(D, elementwise_affine=False, eps=1e-6)
        self.attn = Attention(D, config.num_heads)
        text = config.text_dim is not None and config.text_cross_attention
        self.cross_attn = TextCrossAttention(D, config.num_heads, config.text_dim) if text else None
        self.norm2 = nn.LayerNorm(D, elementwise_affine=False, eps=1e-6)
        hidden = int(D * config.mlp_ratio)
        self.mlp = nn.Sequential(linear(D, hidden), nn.GELU(approximate="tanh"), linear(hidden, D))
        self.modulation = linear(D, 6 * D, zero=True)

    def forward(self, h: torch.Tensor, c: torch.Tensor, context: Context) -> torch.Tensor:
        """h [B, T, D] tokens, c [B, D] the SiLU of the condition embedding."""
        shift1, scale1, gate1, shift2, scale2, gate2 = self.modulation(c)[:, None].chunk(6, dim=-1)
        h = h + gate1 * self.attn(modulate(self.norm1(h), shift1, scale1))  # x + alpha_1 Attn(adaLN(x))
        if self.cross_attn is not None:
            h = self.cross_attn(h, *context)
        return h + gate2 * self.mlp(modulate(self.norm2(h), shift2, scale2))  # x + alpha_2 MLP(adaLN(x))


class FinalLayer(nn.Module):
    """adaLN-modulated LayerNorm, then a linear map of each token to its patch's p*p*C_out values; both zero at the
    start, so a fresh DiT outputs zeros."""

    def __init__(self, config: DiTConfig, out_channels: int):
        super().__init__()
        D = config.hidden_size
        self.norm = nn.LayerNorm(D, elementwise_affine=False, eps=1e-6)
        self.modulation = linear(D, 2 * D, zero=True)
        self.linear = linear(D, config.patch_size**2 * out_channels, zero=True)

    def forward(self, h: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
        shift, scale = self.modulation(c)[:, None].chunk(2, dim=-1)
        return self.linear(modulate(self.norm(h), shift, scale))


class DiT(nn.Module):
    """net(x_t [B, C, H, W], c_noise [B], cond) -> prediction [B, C_out, H, W], for any H, W divisible by p.

    c_noise is the noise level as the network sees it (for VP models the continuous timestep). cond may carry class
    labels and text: the class embedding and the pooled text are added to the noise embedding, which conditions
    every block by adaLN-Zero; with text_cross_attention the blocks also attend to the text tokens.
    """

    def __init__(self, config: DiTConfig):
        super().__init__()
        self.config = config
        D, p = config.hidden_size, config.patch_size
        self.out_channels = (config.out_channels or config.in_channels) * (2 if config.learned_variance else 1)
        self.patch_embed = linear(p * p * config.in_channels, D)  # a p x p convolution of stride p
        self.embed = NoiseEmbedding(D, D, config.num_classes)
        self.text = TextContext(config.text_dim, D) if config.text_dim else None
        self.blocks = nn.ModuleList(DiTBlock(config) for _ in range(config.depth))
        self.final = FinalLayer(config, self.out_channels)

    def forward(self, x: torch.Tensor, c_noise: torch.Tensor, cond: Condition | None = None) -> torch.Tensor:
        B, _, H, W = x.shape
        p = self.config.patch_size
        h = self.patch_embed(patchify(x, p))  # [B, T, D], T = HW / p^2
        h = h + sincos_positions(H // p, W // p, self.config.hidden_size, x.device).to(h.dtype)
        c, context = condition_embedding(self.embed, self.text, c_noise, cond, B, x.device)
        for block in self.blocks:
            h = block(h, c, context)
        return unpatchify(self.final(h, c), p, H, W)
