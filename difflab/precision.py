"""Mixed precision, shared by training and sampling: the network's matrix products under torch.autocast in bf16 or
fp16, everything autocast leaves alone (elementwise maths, float64 sampler state, weights) as it was."""

from __future__ import annotations

import contextlib

import torch

from difflab.errors import DifflabError

AUTOCAST_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}
TRAINING_PRECISIONS = ("fp32", "bf16", "fp16", "auto")
SAMPLING_PRECISIONS = ("fp32", "bf16")  # fp16 has no fast CPU kernels (0.05x in training) and no sampling test


def resolve_precision(precision: str, device: torch.device) -> str:
    """A training precision for `device`: "auto" is bf16 on a CPU with AMX bf16 units (about 1.7x float32's steps
    per second there, and the lower FD at equal time: README, "Quality per compute"), float32 elsewhere."""
    if precision != "auto":
        return precision
    amx = device.type == "cpu" and torch.cpu.get_capabilities().get("amx_bf16", False)
    return "bf16" if amx else "fp32"


def autocast(device: torch.device, precision: str) -> contextlib.AbstractContextManager:
    """Convolutions, linear layers and attention in bf16/fp16 where autocast deems it safe; a no-op for fp32.
    Autocast never touches float64 tensors, so a sampler's float64 state and its update stay exact."""
    dtype = AUTOCAST_DTYPES.get(precision)
    return contextlib.nullcontext() if dtype is None else torch.autocast(device.type, dtype)


def check_sampling_precision(precision: str) -> None:
    """A one-line error for a precision sampling has no kernels or tests for."""
    if precision not in SAMPLING_PRECISIONS:
        raise DifflabError(f"--precision for sampling must be {' or '.join(SAMPLING_PRECISIONS)}, got {precision!r}")
