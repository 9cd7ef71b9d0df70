"""The bundled models give the same samples, to the byte, as when tests/golden/ was written (fixed seeds, DDIM and
DPM++ 2M, unconditional, class and text with CFG). A refactor of the core must keep them.

    python tests/test_golden.py    # rewrite tests/golden/*.npy, only on purpose (before a refactor, never after)
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from difflab.commands import BUNDLED_CONDITIONAL_MODEL, BUNDLED_MODEL
from difflab.guidance import Guidance
from difflab.pipelines.conditions import request_condition
from difflab.pipelines.generate import generate
from difflab.train.checkpoint import load_denoiser

GOLDEN = Path(__file__).resolve().parent / "golden"

# name -> (model, sampler, grid, class label, prompt, cfg weight)
CASES = {
    "uncond_ddim": (BUNDLED_MODEL, "ddim", "trailing", None, None, 0.0),
    "uncond_dpmpp_2m": (BUNDLED_MODEL, "dpmpp_2m", "karras", None, None, 0.0),
    "class_ddim_cfg": (BUNDLED_CONDITIONAL_MODEL, "ddim", "trailing", 9, None, 3.0),
    "text_dpmpp_2m_cfg": (BUNDLED_CONDITIONAL_MODEL, "dpmpp_2m", "karras", None, "a sandal for summer", 3.0),
}
N, STEPS, SEED = 4, 10, 0


def sample_case(name: str) -> np.ndarray:
    path, sampler, grid, label, prompt, cfg = CASES[name]
    denoiser, checkpoint = load_denoiser(path)
    cond = request_condition(checkpoint.config, label=label, prompt=prompt)
    cond = None if cond is None else cond.repeat(N)
    x = generate(denoiser, checkpoint.config.data_shape, N, sampler=sampler, steps=STEPS, grid=grid, seed=SEED,
                 cond=cond, guidance=Guidance(cfg=cfg))
    return x.numpy()


@pytest.mark.parametrize("name", sorted(CASES))
def test_bundled_models_sample_as_before(name):
    expected = np.load(GOLDEN / f"{name}.npy")
    got = sample_case(name)
    assert got.dtype == expected.dtype and got.shape == expected.shape
    assert got.tobytes() == expected.tobytes(), f"max difference {np.abs(got - expected).max():.3g}"


if __name__ == "__main__":
    torch.set_num_threads(1)  # as the tests run (tests/conftest.py)
    GOLDEN.mkdir(exist_ok=True)
    for case in CASES:
        np.save(GOLDEN / f"{case}.npy", sample_case(case))
        print(f"wrote {GOLDEN / case}.npy")
