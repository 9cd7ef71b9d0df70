import gzip

import numpy as np
import pytest
import torch
from PIL import Image

from difflab.data import load_dataset
from difflab.data.fashion_mnist import load_fashion_mnist, read_idx
from difflab.data.folder import load_image_folder
from difflab.data.toy import TOY_SETS
from difflab.errors import DifflabError


def _idx(dims, dtype_code=0x08, payload=None):
    header = bytes([0, 0, dtype_code, len(dims)]) + b"".join(d.to_bytes(4, "big") for d in dims)
    return header + (payload if payload is not None else bytes(int(np.prod(dims))))


def _write_fashion(root, n=5, gz=False):
    images = _idx((n, 28, 28), payload=np.arange(n * 784, dtype=np.uint8).tobytes())
    labels = _idx((n,), payload=bytes(range(n)))
    for name, raw in (("train-images-idx3-ubyte", images), ("train-labels-idx1-ubyte", labels)):
        (root / (name + (".gz" if gz else ""))).write_bytes(gzip.compress(raw) if gz else raw)


@pytest.mark.parametrize("gz", [False, True])
def test_idx_reader_reads_images_and_labels(tmp_path, gz):
    _write_fashion(tmp_path, gz=gz)
    data = load_fashion_mnist(tmp_path, "train")
    assert data.data.shape == (5, 1, 28, 28) and data.data.dtype == torch.uint8
    assert data.labels.tolist() == [0, 1, 2, 3, 4]
    x, y = data.batch(torch.tensor([0, 1]))
    assert x.min() >= -1 and x.max() <= 1 and x.dtype == torch.float32


def test_idx_reader_rejects_bad_magic_and_size(tmp_path):
    path = tmp_path / "bad"
    path.write_bytes(_idx((2, 28, 28), dtype_code=0x0D))
    with pytest.raises(DifflabError, match="not an IDX file"):
        read_idx(path, 3)
    path.write_bytes(_idx((2, 28, 28))[:-10])
    with pytest.raises(DifflabError, match="announces shape"):
        read_idx(path, 3)
    path.write_bytes(_idx((4,)))
    with pytest.raises(DifflabError, match="dimension"):
        read_idx(path, 3)


def test_missing_fashion_mnist_says_how_to_install(tmp_path):
    with pytest.raises(DifflabError, match="apt-get install -y dataset-fashion-mnist"):
        load_fashion_mnist(tmp_path / "nowhere")


def test_label_count_mismatch(tmp_path):
    _write_fashion(tmp_path)
    (tmp_path / "train-labels-idx1-ubyte").write_bytes(_idx((4,)))
    with pytest.raises(DifflabError, match="5 images but 4 labels"):
        load_fashion_mnist(tmp_path)


def test_image_folder_with_classes(tmp_path):
    for cls in ("cats", "dogs"):
        (tmp_path / cls).mkdir()
        for i in range(3):
            Image.fromarray(np.full((32, 32, 3), 40 * i, np.uint8)).save(tmp_path / cls / f"{i}.png")
    data = load_image_folder(tmp_path)
    assert data.data.shape == (6, 3, 32, 32) and data.class_names == ("cats", "dogs")
    assert data.labels.tolist() == [0, 0, 0, 1, 1, 1]


def test_image_folder_rejects_mixed_sizes_and_empty(tmp_path):
    with pytest.raises(DifflabError, match="no PNG or JPEG"):
        load_image_folder(tmp_path)
    Image.fromarray(np.zeros((8, 8), np.uint8)).save(tmp_path / "a.png")
    Image.fromarray(np.zeros((9, 9), np.uint8)).save(tmp_path / "b.png")
    with pytest.raises(DifflabError, match="resize"):
        load_image_folder(tmp_path)


@pytest.mark.parametrize("name", sorted(TOY_SETS))
def test_toy_sets(name):
    data = load_dataset(f"toy:{name}")
    assert data.data.shape == (50_000, 2) and data.kind == "points"
    assert data.data.abs().max() < 6 and data.data.std() > 0.3
    assert torch.equal(load_dataset(f"toy:{name}").data, data.data)  # fixed seed, same draw


def test_unknown_data_spec():
    with pytest.raises(DifflabError, match="unknown data set"):
        load_dataset("mnist-but-not")
    with pytest.raises(DifflabError, match="unknown toy data set"):
        load_dataset("toy:spiral")
