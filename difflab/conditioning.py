"""What a network is conditioned on, as one batched value of named kinds: class labels, encoded text, and tensors
(a control image, a low-resolution image, an inpainting mask, a noise-augmentation level).

A missing kind means "no condition" of that kind. Inside a batch a row can also be null on its own, each kind with
its own null value: label -1 is the null label, a text row whose mask is all False is the null text, and a tensor
row is null where its `present` flag is False (its value is then zeros, so a network can tell an absent image from
a black one). So conditional and unconditional rows share one forward pass (classifier-free guidance), and
dropout nulls chosen rows of chosen kinds (`Condition.drop`).
"""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Literal

import torch
import torch.nn.functional as F

NULL_LABEL = -1

# The vocabulary of condition kinds; a network config declares the ones it takes (its `accepts` property).
ConditionKind = Literal["class", "text", "control", "low_res", "mask", "noise_level"]
TensorKind = Literal["control", "low_res", "mask", "noise_level"]
TENSOR_KINDS: tuple[TensorKind, ...] = ("control", "low_res", "mask", "noise_level")
CONDITION_KINDS: tuple[ConditionKind, ...] = ("class", "text", *TENSOR_KINDS)
IMAGE_KINDS: tuple[TensorKind, ...] = ("control", "low_res", "mask")  # [B, C, H, W]; noise_level is [B]


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

    def expand(self, n: int) -> TextEmbedding:
        """A one-row embedding as n rows (views, no copies)."""
        return TextEmbedding(self.tokens.expand(n, -1, -1), self.mask.expand(n, -1), self.pooled.expand(n, -1))

    def to(self, device=None, dtype=None) -> TextEmbedding:
        return TextEmbedding(self.tokens.to(device, dtype), self.mask.to(device), self.pooled.to(device, dtype))

    @staticmethod
    def cat(parts: Sequence[TextEmbedding]) -> TextEmbedding:
        length = max(p.tokens.shape[1] for p in parts)
        parts = [p.padded(length) for p in parts]
        return TextEmbedding(torch.cat([p.tokens for p in parts]), torch.cat([p.mask for p in parts]),
                             torch.cat([p.pooled for p in parts]))


@dataclass(frozen=True)
class TensorCondition:
    """One tensor kind of a batch: `value` [B, ...] per row and `present` [B] bool; a null row is zeros, not present."""

    value: torch.Tensor
    present: torch.Tensor

    def __len__(self) -> int:
        return self.value.shape[0]

    @staticmethod
    def of(value: torch.Tensor) -> TensorCondition:
        """Every row present."""
        return TensorCondition(value, torch.ones(value.shape[0], dtype=torch.bool, device=value.device))

    @staticmethod
    def null(n: int, like: TensorCondition) -> TensorCondition:
        """n null rows shaped like `like`'s rows."""
        value = like.value.new_zeros((n, *like.value.shape[1:]))
        return TensorCondition(value, torch.zeros(n, dtype=torch.bool, device=value.device))

    def drop(self, rows: torch.Tensor) -> TensorCondition:
        """Null where `rows` [B] is True."""
        keep = ~rows.to(self.present.device)
        return TensorCondition(self.value * keep.view(-1, *[1] * (self.value.ndim - 1)), self.present & keep)

    def __getitem__(self, index) -> TensorCondition:
        return TensorCondition(self.value[index], self.present[index])

    def to(self, device=None) -> TensorCondition:
        return TensorCondition(self.value.to(device), self.present.to(device))

    def expand(self, n: int) -> TensorCondition:
        """A one-row tensor condition as n rows (views, no copies)."""
        return TensorCondition(self.value.expand(n, *self.value.shape[1:]), self.present.expand(n))

    @staticmethod
    def cat(parts: Sequence[TensorCondition]) -> TensorCondition:
        return TensorCondition(torch.cat([p.value for p in parts]), torch.cat([p.present for p in parts]))


@dataclass(frozen=True)
class Condition:
    """A batch of conditions: `labels` [B] long (NULL_LABEL = none), `text`, and `tensors` by kind (TENSOR_KINDS;
    a plain tensor is taken as present on every row). Nothing given: unconditional."""

    labels: torch.Tensor | None = None
    text: TextEmbedding | None = None
    tensors: Mapping[TensorKind, TensorCondition] = field(default_factory=dict)

    def __post_init__(self) -> None:
        tensors = {kind: part if isinstance(part, TensorCondition) else TensorCondition.of(part)
                   for kind, part in self.tensors.items()}
        object.__setattr__(self, "tensors", tensors)
        for kind, part in tensors.items():
            if kind not in TENSOR_KINDS:
                raise ValueError(f"Condition.tensors: unknown kind {kind!r}; the kinds are {', '.join(TENSOR_KINDS)}")
            ndim = 4 if kind in IMAGE_KINDS else 1
            if part.value.ndim != ndim or part.present.shape != part.value.shape[:1]:
                raise ValueError(f"Condition.tensors[{kind!r}] must be [B{', C, H, W' if ndim == 4 else ''}] with "
                                 f"present [B], got {list(part.value.shape)} and {list(part.present.shape)}")
        sizes = {len(part) for part in (self.labels, self.text, *tensors.values()) if part is not None}
        if len(sizes) > 1:
            raise ValueError(f"every kind of a Condition must have the same rows, got {sorted(sizes)}")

    def __len__(self) -> int:
        parts = [part for part in (self.labels, self.text, *self.tensors.values()) if part is not None]
        return len(parts[0]) if parts else 0

    @property
    def kinds(self) -> frozenset[ConditionKind]:
        """The kinds this condition carries."""
        given = {"class": self.labels is not None, "text": self.text is not None}
        return frozenset([kind for kind, present in given.items() if present] + list(self.tensors))

    def __getitem__(self, index) -> Condition:
        return Condition(None if self.labels is None else self.labels[index],
                         None if self.text is None else self.text[index],
                         {kind: part[index] for kind, part in self.tensors.items()})

    def to(self, device=None) -> Condition:
        return Condition(None if self.labels is None else self.labels.to(device),
                         None if self.text is None else self.text.to(device),
                         {kind: part.to(device) for kind, part in self.tensors.items()})

    def drop(self, rows: torch.Tensor, kinds: Collection[ConditionKind] = CONDITION_KINDS) -> Condition:
        """Null every kind in `kinds` (default: all) where `rows` [B] is True (condition dropout)."""
        labels, text = self.labels, self.text
        if labels is not None and "class" in kinds:
            labels = torch.where(rows.to(labels.device), NULL_LABEL, labels)
        if text is not None and "text" in kinds:
            text = text.drop(rows)
        return Condition(labels, text, {kind: part.drop(rows) if kind in kinds else part
                                        for kind, part in self.tensors.items()})

    @staticmethod
    def cat(parts: Sequence[Condition | None], sizes: Sequence[int]) -> Condition | None:
        """Concatenate batches of `sizes` rows; a part that lacks a kind (or is None) is null there."""
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
        tensors = {}
        for kind in TENSOR_KINDS:
            ref = next((p.tensors[kind] for p in parts if kind in p.tensors), None)
            if ref is not None:
                tensors[kind] = TensorCondition.cat([p.tensors[kind] if kind in p.tensors
                                                     else TensorCondition.null(n, ref) for p, n in zip(parts, sizes)])
        if labels is None and text is None and not tensors:
            return None
        return Condition(labels, text, tensors)

    def repeat(self, n: int) -> Condition:
        """A one-row condition broadcast to n rows (views, no copies)."""
        if len(self) != 1:
            raise ValueError(f"repeat needs a one-row condition, got {len(self)} rows")
        return Condition(None if self.labels is None else self.labels.expand(n),
                         None if self.text is None else self.text.expand(n),
                         {kind: part.expand(n) for kind, part in self.tensors.items()})
