"""Malformed input gets one clear DifflabError line: sample archives (.npz) and damaged IDX files."""

import gzip

import numpy as np
import pytest

from difflab.cli import main
from difflab.data.fashion_mnist import read_idx
from difflab.errors import DifflabError
from difflab.eval.samples import read_samples


def write(path, **arrays):
    np.savez(path, **arrays)
    return path


def test_reads_images_with_labels_and_points(tmp_path):
    images = np.zeros((12, 28, 28, 1), np.uint8)
    samples = read_samples(write(tmp_path / "a.npz", images=images, labels=np.arange(12) % 10))
    assert samples.images.shape == (12, 28, 28) and samples.labels.dtype == np.int64 and len(samples) == 12
    assert len(samples.head(10)) == 10 and len(samples.head(10).labels) == 10
    points = read_samples(write(tmp_path / "p.npz", points=np.zeros((12, 2), np.float32))).points
    assert points.dtype == np.float64 and points.shape == (12, 2)


@pytest.mark.parametrize("arrays, message", [
    ({"pictures": np.zeros((12, 28, 28), np.uint8)}, "must hold one array 'images'.*it holds 'pictures'"),
    ({"images": np.zeros((12, 28, 28), np.uint8), "points": np.zeros((12, 2))}, "must hold one array"),
    ({"images": np.zeros((12, 28, 28), np.float32)}, "'images' must be uint8"),
    ({"images": np.zeros((12, 784), np.uint8)}, r"shape \[N, 28, 28\].*got \[12, 784\]"),
    ({"images": np.zeros((12, 28, 28, 3), np.uint8)}, r"one channel.*got \[12, 28, 28, 3\]"),
    ({"images": np.zeros((12, 32, 32), np.uint8)}, "images are 32x32 but the feature net takes 28x28"),
    ({"images": np.zeros((5, 28, 28), np.uint8)}, "holds 5 samples; evaluation needs at least 10"),
    ({"images": np.zeros((12, 28, 28), np.uint8), "labels": np.zeros(11, np.int64)},
     r"'labels' must be integers \[12\]"),
    ({"images": np.zeros((12, 28, 28), np.uint8), "labels": np.full(12, 0.5)}, "'labels' must be integers"),
    ({"images": np.zeros((12, 28, 28), np.uint8), "labels": np.full(12, 10)}, r"'labels' must lie in 0\.\.9"),
    ({"points": np.zeros((12, 3))}, r"'points' must be float \[N, 2\]"),
    ({"points": np.full((12, 2), np.nan)}, "NaN or infinite"),
])
def test_malformed_archives_are_rejected(tmp_path, arrays, message):
    with pytest.raises(DifflabError, match=message):
        read_samples(write(tmp_path / "bad.npz", **arrays))


def test_files_that_are_not_plain_npz_archives(tmp_path):
    with pytest.raises(DifflabError, match="not found"):
        read_samples(tmp_path / "missing.npz")
    (tmp_path / "text.npz").write_text("not a zip")
    with pytest.raises(DifflabError, match="not a readable .npz"):
        read_samples(tmp_path / "text.npz")
    pickled = write(tmp_path / "pickled.npz", images=np.array([object()] * 12, dtype=object))
    with pytest.raises(DifflabError, match="not a readable .npz"):
        read_samples(pickled)


def test_damaged_gzip_idx_file_gives_a_clear_error(tmp_path):
    raw = bytes([0, 0, 8, 1]) + (4).to_bytes(4, "big") + bytes(4)
    path = tmp_path / "labels-idx1-ubyte.gz"
    path.write_bytes(gzip.compress(raw)[:-12])
    with pytest.raises(DifflabError, match="damaged gzip"):
        read_idx(path, 1)


def test_cli_prints_one_line_for_a_bad_archive(tmp_path, capsys):
    path = write(tmp_path / "bad.npz", images=np.zeros((12, 28, 28), np.int16))
    assert main(["eval", str(path)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and err.startswith("difflab eval: error:") and "uint8" in err
    assert main(["eval", str(write(tmp_path / "p.npz", points=np.zeros((12, 2))))]) == 2
    assert "toy:NAME" in capsys.readouterr().err


def test_cli_rejects_flags_that_do_not_apply(tmp_path, capsys):
    images = write(tmp_path / "i.npz", images=np.zeros((12, 28, 28), np.uint8))
    assert main(["eval", str(images), "--save", str(tmp_path / "x.npz")]) == 2
    assert "--save FILE.npz applies only when sampling from a checkpoint" in capsys.readouterr().err
    assert main(["eval", str(tmp_path / "model.safetensors"), "--save", str(tmp_path / "x.png")]) == 2
    assert "--save FILE.npz" in capsys.readouterr().err
    assert main(["eval", str(images), "--data", "toy:moons"]) == 2
    assert "--data applies only to toy points" in capsys.readouterr().err
    assert main(["eval", str(images), "--n", "5"]) == 2
    assert "--n must be >= 10" in capsys.readouterr().err
