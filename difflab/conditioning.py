"""What a network is conditioned on, as one batched value: class labels and/or encoded text.

A missing part means "no condition" (the null label / null text, learned by label dropout). Inside a batch a
row can also be null on its own: label -1 is the null label, and a text row whose mask is all False is the
null text. So conditional and unconditional rows can share one forward pass (classifier-free guidance).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F

NULL_LABEL = -1


@dataclass(frozen=True)
class TextEmbedding:
    """A frozen text encoder's output for a batch of prompts."""

    tokens: torch.Tensor  # [B, L, D] per-token features
    mask: torch.Tensor  # [B, L] bool, True at real tokens; an all-False row is the null text
    pooled: torch.Tensor  # [B, D] sentence embedding (masked mean of the tokens, unit norm)

    def __len__(self) -> int:
        return self.tokens.shape[0]

    @property
    def is_null(self) -> torch.Tensor:
        """[B] bool: rows that carry no text."""
        return ~self.mask.any(dim=1)

    @staticmethod
    def null(n: int, dim: int, device=None, dtype=torch.float32) -> TextEmbedding:
        return TextEmbedding(torch.zeros(n, 1, dim, device=device, dtype=dtype),
                             torch.zeros(n, 1, dtype=torch.bool, device=device),
                             torch.zeros(n, dim, device=device, dtype=dtype))

    def drop(self, rows: torch.Tensor) -> TextEmbedding:
        """Null text where `rows` [B] is True (text dropout)."""
        keep = ~rows.to(self.mask.device)
        return TextEmbedding(self.tokens * keep[:, None, None], self.mask & keep[:, None], self.pooled * keep[:, None])

    def padded(self, length: int) -> TextEmbedding:
        """The same embedding with masked-out padding up to `length` tokens."""
        pad = length - self.tokens.shape[1]
        if pad == 0:
            return self
        return TextEmbedding(F.pad(self.tokens, (0, 0, 0, pad)), F.pad(self.mask, (0, pad)), self.pooled)

    def __getitem__(self, index) -> TextEmbedding:
        return TextEmbedding(self.tokens[index], self.mask[index], self.pooled[index])

    def to(self, device=None, dtype=None) -> TextEmbedding:
        return TextEmbedding(self.tokens.to(device, dtype), self.mask.to(device), self.pooled.to(device, dtype))

    @staticmethod
    def cat(parts: Sequence[TextEmbedding]) -> TextEmbedding:
        length = max(p.tokens.shape[1] for p in parts)
        parts = [p.padded(length) for p in parts]
        return TextEmbedding(torch.cat([p.tokens for p in parts]), torch.cat([p.mask for p in parts]),
                             torch.cat([p.pooled for p in parts]))


@dataclass(frozen=True)
class Condition:
    """A batch of conditions; `labels` [B] long (NULL_LABEL = none) and/or `text`. Both None: unconditional."""

    labels: torch.Tensor | None = None
    text: TextEmbedding | None = None

    def __len__(self) -> int:
        if self.labels is not None:
            return self.labels.shape[0]
        return 0 if self.text is None else len(self.text)

    def __getitem__(self, index) -> Condition:
        return Condition(None if self.labels is None else self.labels[index],
                         None if self.text is None else self.text[index])

    def to(self, device=None) -> Condition:
        return Condition(None if self.labels is None else self.labels.to(device),
                         None if self.text is None else self.text.to(device))

    def drop(self, rows: torch.Tensor) -> Condition:
        """Null condition (label and text) where `rows` [B] is True."""
        labels = None if self.labels is None else torch.where(rows.to(self.labels.device), NULL_LABEL, self.labels)
        return Condition(labels, None if self.text is None else self.text.drop(rows))

    @staticmethod
    def cat(parts: Sequence[Condition | None], sizes: Sequence[int]) -> Condition | None:
        """Concatenate batches of `sizes` rows; a part that lacks labels or text (or is None) is null there."""
        parts = [p or Condition() for p in parts]
        labels = None
        if any(p.labels is not None for p in parts):
            ref = next(p.labels for p in parts if p.labels is not None)
            labels = torch.cat([p.labels if p.labels is not None else torch.full((n,), NULL_LABEL, dtype=ref.dtype,
                                device=ref.device) for p, n in zip(parts, sizes)])
        text = None
        if any(p.text is not None for p in parts):
            ref = next(p.text for p in parts if p.text is not None)
            text = TextEmbedding.cat([p.text if p.text is not None else TextEmbedding.null(
                n, ref.tokens.shape[2], ref.tokens.device, ref.tokens.dtype) for p, n in zip(parts, sizes)])
        if labels is None and text is None:
            return None
        return Condition(labels, text)

    def repeat(self, n: int) -> Condition:
        """A one-row condition broadcast to n rows (views, no copies)."""
        if len(self) != 1:
            raise ValueError(f"repeat needs a one-row condition, got {len(self)} rows")
        text = self.text
        if text is not None:
            text = TextEmbedding(text.tokens.expand(n, -1, -1), text.mask.expand(n, -1), text.pooled.expand(n, -1))
        return Condition(None if self.labels is None else self.labels.expand(n), text)
