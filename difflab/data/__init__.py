"""Data sets behind one spec string: `fashion-mnist`, `toy:NAME` or a folder of images."""

from __future__ import annotations

from pathlib import Path

from difflab.data.dataset import Dataset
from difflab.data.fashion_mnist import FASHION_MNIST_CLASSES, load_fashion_mnist
from difflab.data.folder import load_image_folder
from difflab.data.toy import TOY_SETS, load_toy
from difflab.errors import DifflabError

__all__ = ["Dataset", "FASHION_MNIST_CLASSES", "TOY_SETS", "load_dataset", "load_fashion_mnist"]


def load_dataset(spec: str, split: str = "train", root: str | Path | None = None, seed: int = 0) -> Dataset:
    """Resolve a data spec: 'fashion-mnist' (IDX files, `root` overrides the folder), 'toy:NAME' or a folder."""
    if spec == "fashion-mnist":
        return load_fashion_mnist(root, split)
    if spec.startswith("toy:"):
        return load_toy(spec[4:], seed=seed if split == "train" else seed + 1)
    if Path(spec).is_dir():
        return load_image_folder(spec)
    raise DifflabError(
        f"--data: unknown data set {spec!r}; use 'fashion-mnist', an image folder, or one of "
        + ", ".join(f"'toy:{name}'" for name in TOY_SETS)
    )
