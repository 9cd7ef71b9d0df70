"""Data-parallel training on CPU with gloo: two torchrun processes equal one process with the same global batch."""

import os
import subprocess
import sys

import numpy as np
import pytest
import torch

from difflab.train.checkpoint import load_checkpoint

pytestmark = pytest.mark.skipif(not torch.distributed.is_available(), reason="torch.distributed is not built in")


def train(out, steps, processes=1, *extra):
    launcher = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={processes}"]
    command = (launcher if processes > 1 else [sys.executable]) + [
        "-m", "difflab", "train", "--data", "toy:moons", "--batch", "64", "--steps", str(steps), "--out", str(out),
        *extra]
    # one thread per process, as torchrun gives its workers: a loaded machine cannot change the split of a reduction
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.run(command, capture_output=True, text=True, timeout=300, env=env)


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


@pytest.mark.parametrize("n,unit,world", [(7, 3, 2), (10, 4, 3), (2, 64, 4), (64, 1, 2)])
def test_shard_ranges_tile_the_items_at_batch_boundaries(n, unit, world):
    from difflab.distributed import Shard

    bounds = [Shard(r, world).range(n, unit) for r in range(world)]
    assert bounds[0][0] == 0 and bounds[-1][1] == n
    assert all(a[1] == b[0] for a, b in zip(bounds, bounds[1:]))
    assert all(lo % unit == 0 for lo, hi in bounds if hi > lo)


def test_sharded_sampling_equals_single_process_image_for_image(tmp_path):
    assert train(tmp_path / "model", 3).returncode == 0
    checkpoint = str(tmp_path / "model" / "checkpoint.safetensors")
    outputs = []
    for processes in (1, 2):
        launcher = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={processes}"]
        out = tmp_path / f"samples{processes}.npz"
        proc = subprocess.run(launcher + ["-m", "difflab", "sample", checkpoint, "--sampler", "ddpm", "--steps", "20",
                                          "--num-samples", "7", "--batch", "3", "--out", str(out)],
                              capture_output=True, text=True, timeout=300)
        assert proc.returncode == 0, proc.stderr[-3000:]
        outputs.append(np.load(out)["points"])
    assert outputs[0].shape == (7, 2) and np.array_equal(outputs[0], outputs[1])
