"""The bundled models give the same samples as when tests/golden/ was written (fixed seeds, DDIM and DPM++ 2M,
unconditional, class and text with CFG), to within the CPU's kernel noise (tests/golden_arrays.py). A refactor of
the core must keep them. The unconditional cases sample tests/golden/fashion_mnist_model.safetensors, the bundled
model as it was when they were written (retrained since with the default recipe).

    python tests/test_golden.py    # rewrite tests/golden/*.npy, only on purpose (before a refactor, never after)
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from golden_arrays import SAMPLE_ATOL, assert_matches_golden

from difflab.commands import BUNDLED_CONDITIONAL_MODEL
from difflab.guidance import Guidance
from difflab.pipelines.conditions import request_condition
from difflab.pipelines.generate import generate
from difflab.train.checkpoint import load_denoiser

GOLDEN = Path(__file__).resolve().parent / "golden"
UNCONDITIONAL_MODEL = GOLDEN / "fashion_mnist_model.safetensors"

# name -> (model, sampler, grid, class label, prompt, cfg weight)
CASES = {
    "uncond_ddim": (UNCONDITIONAL_MODEL, "ddim", "trailing", None, None, 0.0),
    "uncond_dpmpp_2m": (UNCONDITIONAL_MODEL, "dpmpp_2m", "karras", None, None, 0.0),
    "class_ddim_cfg": (BUNDLED_CONDITIONAL_MODEL, "ddim", "trailing", 9, None, 3.0),
    "text_dpmpp_2m_cfg": (BUNDLED_CONDITIONAL_MODEL, "dpmpp_2m", "karras", None, "a sandal for summer", 3.0),
}
N, STEPS, SEED = 4, 10, 0


def sample_case(name: str, cfg_change: float = 0.0) -> np.ndarray:
    path, sampler, grid, label, prompt, cfg = CASES[name]
    cfg += cfg_change
    denoiser, checkpoint = load_denoiser(path)
    cond = request_condition(checkpoint.config, label=label, prompt=prompt)
    cond = None if cond is None else cond.repeat(N)
    x = generate(denoiser, checkpoint.config.data_shape, N, sampler=sampler, steps=STEPS, grid=grid, seed=SEED,
                 cond=cond, guidance=Guidance(cfg=cfg))
    return x.numpy()


@pytest.mark.parametrize("name", sorted(CASES))
def test_bundled_models_sample_as_before(name):
    assert_matches_golden(sample_case(name), np.load(GOLDEN / f"{name}.npy"), SAMPLE_ATOL)


def test_the_tolerance_catches_a_small_change_of_the_maths():
    """A CFG weight of 3.001 for 3 is a smaller change than any slip of a refactor, and is caught."""
    with pytest.raises(AssertionError, match="max difference"):
        assert_matches_golden(sample_case("class_ddim_cfg", cfg_change=1e-3), np.load(GOLDEN / "class_ddim_cfg.npy"),
                              SAMPLE_ATOL)


if __name__ == "__main__":
    torch.set_num_threads(1)  # as the tests run (tests/conftest.py)
    GOLDEN.mkdir(exist_ok=True)
    for case in CASES:
        np.save(GOLDEN / f"{case}.npy", sample_case(case))
        print(f"wrote {GOLDEN / case}.npy")
