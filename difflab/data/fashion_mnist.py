"""Fashion-MNIST from its IDX files (Debian's dataset-fashion-mnist or any folder holding them)."""

from __future__ import annotations

import gzip
import os
import zlib
from pathlib import Path

import numpy as np
import torch

from difflab.data.dataset import Dataset
from difflab.errors import DifflabError

DEFAULT_ROOT = Path("/usr/share/datasets/fashion-mnist")
FASHION_MNIST_CLASSES = (
    "T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot",
)
_FILES = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}


def read_idx(path: str | Path, expected_ndim: int) -> np.ndarray:
    """Read an IDX file of unsigned bytes (optionally gzip-compressed), checking magic number and size."""
    path = Path(path)
    raw = path.read_bytes()
    if path.suffix == ".gz":
        try:
            raw = gzip.decompress(raw)
        except (OSError, EOFError, zlib.error) as err:
            raise DifflabError(f"{path}: damaged gzip file ({err})") from None
    magic = raw[:4]  # two zero bytes, type code 0x08 (unsigned byte), number of dimensions
    if len(raw) < 4 or magic[:3] != b"\x00\x00\x08" or magic[3] != expected_ndim:
        raise DifflabError(
            f"{path}: not an IDX file of unsigned bytes with {expected_ndim} dimension(s) (magic {magic.hex()})"
        )
    header = 4 + 4 * expected_ndim
    if len(raw) < header:
        raise DifflabError(f"{path}: truncated IDX header")
    dims = tuple(int.from_bytes(raw[4 + 4 * i: 8 + 4 * i], "big") for i in range(expected_ndim))
    expected = header + int(np.prod(dims))
    if len(raw) != expected:
        raise DifflabError(f"{path}: IDX header announces shape {dims} ({expected} bytes) but the file has {len(raw)}")
    return np.frombuffer(raw, dtype=np.uint8, offset=header).reshape(dims)


def _find(root: Path, stem: str) -> Path:
    for candidate in (root / stem, root / f"{stem}.gz"):
        if candidate.is_file():
            return candidate
    raise DifflabError(
        f"Fashion-MNIST file {stem}[.gz] not found in {root}; install it with "
        "'apt-get install -y dataset-fashion-mnist' or pass --data-root DIR holding the IDX files"
    )


def load_fashion_mnist(root: str | Path | None = None, split: str = "train") -> Dataset:
    """The train (60k) or test (10k) split as uint8 [N, 1, 28, 28] with labels 0..9."""
    if split not in _FILES:
        raise DifflabError(f"split must be 'train' or 'test', got {split!r}")
    root = Path(root or os.environ.get("DIFFLAB_FASHION_MNIST", DEFAULT_ROOT))
    images_file, labels_file = _FILES[split]
    images = read_idx(_find(root, images_file), 3)
    labels = read_idx(_find(root, labels_file), 1)
    if images.shape[0] != labels.shape[0]:
        raise DifflabError(f"{root}: {images.shape[0]} images but {labels.shape[0]} labels in the {split} split")
    if labels.max(initial=0) >= len(FASHION_MNIST_CLASSES):
        raise DifflabError(f"{root}: label {labels.max()} out of range 0..9")
    return Dataset(
        name="fashion-mnist",
        kind="image",
        data=torch.from_numpy(images.copy()).unsqueeze(1),
        labels=torch.from_numpy(labels.astype(np.int64)),
        class_names=FASHION_MNIST_CLASSES,
    )
