"""bf16 sampling (--precision bf16): the network runs under bf16 autocast, the sampler's float64 state does not, the
samples stay close to float32's, and every path that evaluates the network for a request (generation, its stages,
DDIM inversion) honours it."""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterator

import pytest
import torch

from difflab.cli import main
from difflab.commands import BUNDLED_MODEL
from difflab.edit.invert import invert
from difflab.errors import DifflabError
from difflab.model import load_model
from difflab.pipelines.generate import generate
from difflab.pipelines.request import Request, plan_request


@pytest.fixture(scope="module")
def model():
    return load_model(BUNDLED_MODEL)


@contextlib.contextmanager
def network_dtypes(denoiser) -> Iterator[list[torch.dtype]]:
    """The dtypes of the network's first convolution's outputs, appended as it runs."""
    seen = []
    first = next(m for m in denoiser.net.modules() if isinstance(m, torch.nn.Conv2d))
    hook = first.register_forward_hook(lambda module, args, out: seen.append(out.dtype))
    try:
        yield seen
    finally:
        hook.remove()


def test_bf16_sampling_runs_the_network_in_bf16_and_stays_close_to_fp32(model):
    with network_dtypes(model.denoiser) as seen:
        runs = {p: generate(model.denoiser, (1, 28, 28), 8, sampler="dpmpp_2m", steps=10, seed=0, precision=p)
                for p in ("fp32", "bf16")}
    assert seen == [torch.float32] * 10 + [torch.bfloat16] * 10
    assert runs["bf16"].dtype == torch.float32
    gap = (runs["bf16"] - runs["fp32"]).abs()
    # bf16 keeps 8 bits of mantissa: samples move, by a few hundredths of the [-1, 1] range on average
    assert 1e-4 < float(gap.mean()) < 0.03 and float(gap.max()) < 0.5, (float(gap.mean()), float(gap.max()))


def test_inversion_honours_the_requests_precision(model):
    x0 = generate(model.denoiser, (1, 28, 28), 2, sampler="ddim", steps=4, seed=0)
    plan = plan_request(Request(n=2, steps=4, precision="bf16"), model.denoiser, model.checkpoint.config)
    with network_dtypes(model.denoiser) as seen:
        invert(plan, x0)
    assert seen and set(seen) == {torch.bfloat16}


def test_a_precision_without_sampling_kernels_is_refused(model):
    with pytest.raises(DifflabError, match="--precision for sampling must be fp32 or bf16, got 'fp16'"):
        generate(model.denoiser, (1, 28, 28), 1, steps=2, precision="fp16")
    with pytest.raises(SystemExit):
        main(["sample", str(BUNDLED_MODEL), "--precision", "fp16"])


def test_eval_reports_the_precision_it_sampled_in(tmp_path, capsys):
    assert main(["eval", str(BUNDLED_MODEL), "--n", "20", "--steps", "2", "--precision", "bf16", "--json",
                 "--threads", "1"]) == 0
    result = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert result["sampling_precision"] == "bf16" and result["n"] == 20  # "precision" is the metric
