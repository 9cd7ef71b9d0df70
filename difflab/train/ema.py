"""Exponential moving average of the weights, with the usual warm-up of the decay."""

from __future__ import annotations

import copy

import torch
from torch import nn


def ema_decay(step: int, max_decay: float) -> float:
    # decay_t = min(max_decay, (1 + t) / (10 + t))  (warm-up so early weights are forgotten fast)
    return min(max_decay, (1 + step) / (10 + step))


class EMA:
    def __init__(self, model: nn.Module):
        self.model = copy.deepcopy(model).eval().requires_grad_(False)

    @torch.no_grad()
    def update(self, model: nn.Module, decay: float) -> None:
        # theta_ema <- decay * theta_ema + (1 - decay) * theta
        ema_params = list(self.model.parameters())
        torch._foreach_lerp_(ema_params, [p.detach() for p in model.parameters()], 1 - decay)
        for ema_buffer, buffer in zip(self.model.buffers(), model.buffers()):
            ema_buffer.copy_(buffer)
