"""Data-parallel training on CPU with gloo: two torchrun processes equal one process with the same global batch."""

import subprocess
import sys

import pytest
import torch

from difflab.train.checkpoint import load_checkpoint

pytestmark = pytest.mark.skipif(not torch.distributed.is_available(), reason="torch.distributed is not built in")


def train(out, steps, processes=1, *extra):
    launcher = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={processes}"]
    command = (launcher if processes > 1 else [sys.executable]) + [
        "-m", "difflab", "train", "--data", "toy:moons", "--batch", "64", "--steps", str(steps), "--out", str(out),
        *extra]
    return subprocess.run(command, capture_output=True, text=True, timeout=300)


def weights(out):
    tensors = load_checkpoint(out / "checkpoint.safetensors").tensors
    return {k: v for k, v in tensors.items() if k.startswith(("model.", "ema.", "optim."))}


def assert_close(a, b):
    assert a.keys() == b.keys()
    for key in a:
        assert torch.allclose(a[key].double(), b[key].double(), atol=1e-6, rtol=1e-5), key


def test_two_processes_match_one_and_resume_on_one(tmp_path):
    for name, steps, processes in (("single", 4, 1), ("ddp", 4, 2), ("ddp_then_single", 2, 2)):
        proc = train(tmp_path / name, steps, processes)
        assert proc.returncode == 0, proc.stderr[-3000:]
    assert_close(weights(tmp_path / "single"), weights(tmp_path / "ddp"))
    assert load_checkpoint(tmp_path / "ddp" / "checkpoint.safetensors").step == 4
    # a checkpoint written by two processes resumes on one and continues as the single run did
    proc = train(tmp_path / "ddp_then_single", 4, 1, "--resume")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert_close(weights(tmp_path / "single"), weights(tmp_path / "ddp_then_single"))
    rng = [load_checkpoint(tmp_path / d / "checkpoint.safetensors").tensors["rng.noise"] for d in ("single", "ddp")]
    assert torch.equal(*rng)


def test_batch_must_divide_among_processes(tmp_path):
    proc = train(tmp_path / "odd", 2, 2, "--batch", "63")
    assert proc.returncode != 0
    assert "--batch 63 must be divisible by the 2 processes" in proc.stderr
