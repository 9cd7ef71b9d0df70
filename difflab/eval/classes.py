"""Class statistics from the feature net's softmax: which classes a sample set covers, and conditional accuracy."""

from __future__ import annotations

import torch


def class_shares(probs: torch.Tensor) -> torch.Tensor:
    """Share of samples whose most probable class is c, for each class c [C]."""
    return torch.bincount(probs.argmax(1), minlength=probs.shape[1]).double() / len(probs)


def class_coverage(probs: torch.Tensor, min_share: float | None = None) -> float:
    """Fraction of classes predicted for at least `min_share` of the samples (default: half a uniform share, 1/(2C))."""
    shares = class_shares(probs)
    threshold = 0.5 / len(shares) if min_share is None else min_share
    return float((shares >= threshold).double().mean())


def label_accuracy(probs: torch.Tensor, labels: torch.Tensor) -> float:
    """Share of samples classified as the label they were generated for."""
    return float((probs.argmax(1) == labels).double().mean())
