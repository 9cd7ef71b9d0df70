"""bf16 sampling (--precision bf16): the network runs under bf16 autocast, the sampler's float64 state does not, the
samples stay close to float32's, and every path that evaluates the network for a request (generation, its stages,
DDIM inversion, the server's txt2img, img2img and hires pass) honours it."""

from __future__ import annotations

import base64
import contextlib
import io
import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import torch
from fastapi.testclient import TestClient
from PIL import Image
from test_serve_api import write_checkpoint

from difflab.cli import main
from difflab.commands import BUNDLED_MODEL
from difflab.edit.invert import invert
from difflab.errors import DifflabError
from difflab.model import load_model
from difflab.pipelines.generate import generate
from difflab.pipelines.request import Request, plan_request
from difflab.serve.app import create_app
from difflab.serve.model import load_served_model
from difflab.train.checkpoint import sha256_file

ROOT = Path(__file__).resolve().parents[1]


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


@pytest.mark.parametrize("precision, dtype", [("fp32", torch.float32), ("bf16", torch.bfloat16)])
def test_the_server_runs_every_request_in_its_precision(tmp_path, precision, dtype):
    served = load_served_model(write_checkpoint(tmp_path / "m.safetensors", randomize=True))
    init = base64.b64encode(png_bytes(np.tile(np.arange(0, 256, 16, dtype=np.uint8)[None], (16, 1)))).decode()
    with TestClient(create_app(served, precision=precision)) as client, network_dtypes(served.denoiser) as seen:
        assert client.post("/sdapi/v1/txt2img", json={"steps": 3, "batch_size": 1}).status_code == 200
        assert client.post("/sdapi/v1/img2img", json={"init_images": [init], "steps": 4}).status_code == 200
        hires = {"steps": 2, "enable_hr": True, "hr_scale": 2, "hr_upscaler": "Latent", "hr_second_pass_steps": 2}
        assert client.post("/sdapi/v1/txt2img", json=hires).status_code == 200
    assert len(seen) >= 3 + 1 + 2 + 1 and set(seen) == {dtype}  # every pass, the hires one too
    with pytest.raises(SystemExit):
        main(["serve", str(BUNDLED_MODEL), "--precision", "fp16"])


def png_bytes(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format="PNG")
    return buffer.getvalue()


def test_the_speed_bench_times_both_precisions_and_counts_every_evaluation(tmp_path):
    out = tmp_path / "speed.json"
    result = subprocess.run([sys.executable, str(ROOT / "bench" / "sampling_precision.py"), "--n", "3", "--steps", "2",
                             "--batches", "2", "--rounds", "1", "--json", str(out)], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    report = json.loads(out.read_text())
    assert report["model_sha256"] == sha256_file(BUNDLED_MODEL)
    (row,) = report["rows"]
    assert row["batch"] == 2 and row["fp32_evals_per_s"] > 0 and row["bf16_evals_per_s"] > 0
    assert report["clock"] == "CPU time" and report["threads"] == 1
