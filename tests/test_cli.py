"""The CLI contract: bad input gives one clear line on stderr and a non-zero exit; good input writes files."""

import subprocess
import sys

import numpy as np
import pytest

from difflab.cli import main


def run(capsys, *argv):
    try:
        code = main(list(argv))
    except SystemExit as exit_:  # argparse rejects a flag value
        code = exit_.code
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture(scope="module")
def toy_checkpoint(tmp_path_factory):
    out = tmp_path_factory.mktemp("toy")
    assert main(["train", "--data", "toy:moons", "--steps", "3", "--out", str(out)]) == 0
    return out / "checkpoint.safetensors"


def test_sample_writes_png_and_npz(capsys, toy_checkpoint, tmp_path):
    code, out, _ = run(capsys, "sample", str(toy_checkpoint), "--steps", "3", "--n", "5", "--out", str(tmp_path / "p.npz"))
    assert code == 0 and "wrote 5 samples" in out
    assert np.load(tmp_path / "p.npz")["points"].shape == (5, 2)
    code, _, _ = run(capsys, "sample", str(toy_checkpoint), "--sampler", "ddpm", "--steps", "4", "--n", "3",
                     "--out", str(tmp_path / "p.png"))
    assert code == 0 and (tmp_path / "p.png").read_bytes()[:4] == b"\x89PNG"


@pytest.mark.parametrize("argv,message", [
    (["sample", "{ckpt}", "--sampler", "nope"], "unknown sampler 'nope'"),
    (["sample", "{ckpt}", "--steps", "0"], "--steps must be > 0"),
    (["sample", "{ckpt}", "--n", "0"], "--n must be > 0"),
    (["sample", "{ckpt}", "--n", "many"], "--n must be an integer"),
    (["sample", "{ckpt}", "--out", "x.jpg"], "--out must end in .png or .npz"),
    (["sample", "{ckpt}", "--sampler", "ddpm", "--eta", "0.5"], "--eta does not apply to sampler 'ddpm'"),
    (["sample", "{ckpt}", "--class", "3"], "class-conditional"),
    (["sample", "{ckpt}", "--sampler", "ddpm", "--variance", "learned"], "needs a model trained with learned variance"),
    (["eval", "{ckpt}", "--sampler", "ddpm", "--variance", "learned"], "needs a model trained with learned variance"),
    (["train", "--label-lr-scale", "0"], "--label-lr-scale must be > 0"),
    (["sample", "{ckpt}", "--steps", "5000"], "steps must be <= the schedule's 1000"),
    (["sample", "{bad}"], "damaged or not a safetensors file"),
    (["sample", "{missing}"], "not found"),
    (["train", "--data-root", "{missing}", "--steps", "1"], "apt-get install -y dataset-fashion-mnist"),
    (["train", "--data", "toy:spiral", "--steps", "1"], "unknown toy data set"),
    (["train", "--steps", "-3"], "--steps must be > 0"),
    (["train", "--max-timestep", "0", "--steps", "1"], "train.max_timestep (a refiner's levels) must be >= 1"),
    (["train", "--max-timestep", "5000", "--steps", "1"], "train.max_timestep must be <= the schedule's 1000"),
    (["train", "--config", "{missing}"], "not found"),
    (["train", "--resume", "--out", "{empty}", "--data", "toy:moons"], "no checkpoint"),
])
def test_bad_input_gives_one_clear_line(capsys, toy_checkpoint, tmp_path, argv, message):
    bad = tmp_path / "bad.safetensors"
    bad.write_bytes(b"garbage that is not a checkpoint")
    paths = {"ckpt": toy_checkpoint, "bad": bad, "missing": tmp_path / "missing", "empty": tmp_path / "empty"}
    code, out, err = run(capsys, *[a.format(**paths) for a in argv])
    assert code != 0
    assert message in err
    assert len(err.strip().splitlines()) == 1 and err.startswith("difflab ")


def test_process_exit_code_and_single_line(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "difflab", "sample", str(tmp_path / "nope.safetensors")],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == [f"difflab sample: error: checkpoint {tmp_path / 'nope.safetensors'} not found"]


def test_samplers_lists_the_registry(capsys):
    code, out, _ = run(capsys, "samplers")
    assert code == 0 and "ddpm" in out and "ddim" in out
