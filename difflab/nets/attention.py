"""Attention over the H*W positions of a feature map: self-attention and cross-attention to text tokens."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class TextContext(nn.Module):
    """Keys/values for cross-attention and a pooled vector for the embedding, with a learned null text.

    Rows whose mask is all False (no prompt, or dropped in training) get the learned null token and null pooled
    vector, as the null label does for classes.
    """

    def __init__(self, text_dim: int, embed_dim: int):
        super().__init__()
        self.null_token = nn.Parameter(torch.zeros(text_dim))
        self.null_pooled = nn.Parameter(torch.zeros(text_dim))
        self.pooled_proj = nn.Linear(text_dim, embed_dim)
        nn.init.zeros_(self.pooled_proj.weight)  # zero: adding text to a trained network starts from its output
        nn.init.zeros_(self.pooled_proj.bias)

    def forward(self, text, batch: int, device, dtype) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(tokens [B, L, D], mask [B, L], pooled embedding [B, embed_dim]) for a TextEmbedding or None."""
        if text is None:
            tokens = self.null_token.to(dtype).expand(batch, 1, -1)
            mask = torch.ones(batch, 1, dtype=torch.bool, device=device)
            pooled = self.null_pooled.to(dtype).expand(batch, -1)
        else:
            null = text.is_null[:, None]
            tokens = text.tokens.to(dtype).clone()
            tokens[:, 0] = torch.where(null, self.null_token.to(dtype), tokens[:, 0])
            mask = text.mask.clone()
            mask[:, 0] |= null[:, 0]
            pooled = torch.where(null, self.null_pooled.to(dtype), text.pooled.to(dtype))
        return tokens, mask, self.pooled_proj(pooled)


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


class CrossAttention(nn.Module):
    """Queries from image features, keys and values from text tokens (Rombach et al. 2022, Eq. 3)."""

    def __init__(self, channels: int, context_dim: int, head_dim: int, groups: int):
        super().__init__()
        self.heads = max(1, channels // head_dim)
        self.norm = nn.GroupNorm(groups, channels)
        self.q = nn.Conv2d(channels, channels, 1)
        self.kv = nn.Linear(context_dim, 2 * channels)
        self.proj = nn.Conv2d(channels, channels, 1)
        nn.init.zeros_(self.proj.weight)
        nn.init.zeros_(self.proj.bias)

    def forward(self, x: torch.Tensor, tokens: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        B, C, H, W = x.shape
        q = self.q(self.norm(x)).reshape(B, self.heads, C // self.heads, H * W).transpose(-1, -2)
        k, v = self.kv(tokens).reshape(B, -1, 2, self.heads, C // self.heads).permute(2, 0, 3, 1, 4)
        # Attention(Q, K, V) = softmax(Q K^T / sqrt(d)) V over the prompt's real tokens only
        h = F.scaled_dot_product_attention(q, k, v, attn_mask=mask[:, None, None, :])
        return x + self.proj(h.transpose(-1, -2).reshape(B, C, H, W))
