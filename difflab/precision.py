"""Mixed precision, shared by training and sampling: the network's matrix products under torch.autocast in bf16 or
fp16, everything autocast leaves alone (elementwise maths, float64 sampler state, weights) as it was."""

from __future__ import annotations

import contextlib

import torch

from difflab.errors import DifflabError

AUTOCAST_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}
SAMPLING_PRECISIONS = ("fp32", "bf16")  # fp16 has no fast CPU kernels (0.05x in training) and no sampling test


def autocast(device: torch.device, precision: str) -> contextlib.AbstractContextManager:
    """Convolutions, linear layers and attention in bf16/fp16 where autocast deems it safe; a no-op for fp32.
    Autocast never touches float64 tensors, so a sampler's float64 state and its update stay exact."""
    dtype = AUTOCAST_DTYPES.get(precision)
    return contextlib.nullcontext() if dtype is None else torch.autocast(device.type, dtype)


def check_sampling_precision(precision: str) -> str:
    if precision not in SAMPLING_PRECISIONS:
        raise DifflabError(f"--precision for sampling must be {' or '.join(SAMPLING_PRECISIONS)}, got {precision!r}")
    return precision
