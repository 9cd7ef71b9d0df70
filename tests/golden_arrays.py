"""Comparing a result with an array stored in tests/golden/ by an earlier version of the code.

The arrays were written on one CPU; another CPU runs other kernels (AVX2, AVX-512, AMX; MKL and oneDNN pick by what
the chip has), which add the same float32 terms in another order. So a result is compared to within that noise, not
to the byte. Measured on one Sapphire Rapids machine, pinning the kernels with ONEDNN_MAX_CPU_ISA, ATEN_CPU_CAPABILITY
and MKL_CBWR from SSE4.1 up to AMX: the golden samples (10 steps, values in [-1, 1]) move by up to 6.2e-5, the
classifier's logits (up to 2.9) by up to 9.5e-7. A change of the maths moves them far more: a guidance weight of
3.0001 instead of 3 moves a golden sample by 1.3e-4, 3.001 by 1.3e-3 (tests/test_golden.py keeps a test of that).
"""

from __future__ import annotations

import numpy as np

SAMPLE_ATOL = 2e-4  # golden samples: 3x the largest kernel spread seen; a CFG weight off by 2e-4 already exceeds it
LOGIT_ATOL = 1e-5  # classifier logits: 10x the largest kernel spread seen


def assert_matches_golden(got, expected, atol: float) -> None:
    """`got` equals `expected` in dtype and shape and to within `atol` everywhere (the CPU's kernel noise)."""
    got, expected = np.asarray(got), np.asarray(expected)
    assert got.dtype == expected.dtype and got.shape == expected.shape, (got.dtype, got.shape, expected.shape)
    difference = float(np.abs(got.astype(np.float64) - expected).max())
    assert difference <= atol, f"max difference {difference:.3g} > {atol:g} (the kernels' noise)"
