"""AdamW with parameter groups: the class-label table may learn faster than the rest; warm-up schedule."""

from __future__ import annotations

import torch
from torch import nn

LABEL_TABLE = "class_embedding.weight"  # the rows of the class labels and the learned null label


def learning_rate(step: int, lr: float, warmup: int) -> float:
    # linear warm-up: lr_t = lr * min(1, (t + 1) / warmup)
    return lr * min(1.0, (step + 1) / max(warmup, 1))


def param_groups(net: nn.Module, label_lr_scale: float) -> list[dict]:
    """AdamW groups over every trainable parameter; with label_lr_scale != 1 the class-label table is a group of
    its own.

    Adam moves each coordinate by about lr per step whatever the gradient's size, so a zero-initialised label
    table fine-tuned at a small lr stays far smaller than the time embedding it is added to; scaling its rate
    lets the label grow to that size in a few thousand steps.
    """
    split = label_lr_scale != 1.0  # one group otherwise, as in checkpoints written before the option existed
    named = [(name, p) for name, p in net.named_parameters() if p.requires_grad]
    labels = [p for name, p in named if split and name.endswith(LABEL_TABLE)]
    rest = [p for name, p in named if not (split and name.endswith(LABEL_TABLE))]
    groups = [{"params": rest, "lr_scale": 1.0}]
    if labels:
        groups.append({"params": labels, "lr_scale": label_lr_scale})
    return groups


def set_learning_rate(optimizer: torch.optim.Optimizer, lr: float) -> None:
    """Set every group's rate to lr times its lr_scale."""
    for group in optimizer.param_groups:
        group["lr"] = lr * group.get("lr_scale", 1.0)
