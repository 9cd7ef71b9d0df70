"""A file of samples to evaluate (.npz): `images` uint8 [N, H, W] or [N, H, W, 1] with optional integer `labels`
[N] (the classes they were generated for), or `points` float [N, 2] of toy data. Bad files get one clear line."""

from __future__ import annotations

import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from difflab.errors import DifflabError
from difflab.eval.feature_net import IMAGE_SIZE, NUM_CLASSES

MIN_SAMPLES = 10


@dataclass(frozen=True)
class Samples:
    """Exactly one of images (uint8 [N, 28, 28]) and points (float64 [N, 2]) is set."""

    images: np.ndarray | None = None
    points: np.ndarray | None = None
    labels: np.ndarray | None = None

    def __len__(self) -> int:
        return len(self.images if self.images is not None else self.points)

    def head(self, n: int | None) -> Samples:
        """The first n samples (all when n is None)."""
        return Samples(*(None if a is None else a[:n] for a in (self.images, self.points, self.labels)))


def read_samples(path: str | Path) -> Samples:
    path = Path(path)
    if not path.is_file():
        raise DifflabError(f"samples file {path} not found")
    try:
        with np.load(path, allow_pickle=False) as archive:
            arrays = {key: archive[key] for key in archive.files}
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as err:
        raise DifflabError(f"{path} is not a readable .npz archive of plain arrays ({err})") from None
    if ("images" in arrays) == ("points" in arrays):
        raise DifflabError(f"{path} must hold one array 'images' (uint8 [N, 28, 28]) or 'points' (float [N, 2]); "
                           f"it holds {', '.join(map(repr, arrays)) or 'none'}")
    samples = _images(path, arrays["images"]) if "images" in arrays else _points(path, arrays["points"])
    if len(samples) < MIN_SAMPLES:
        raise DifflabError(f"{path} holds {len(samples)} samples; evaluation needs at least {MIN_SAMPLES}")
    if "labels" in arrays:
        return Samples(samples.images, samples.points, _labels(path, arrays["labels"], len(samples)))
    return samples


def _images(path: Path, images: np.ndarray) -> Samples:
    if images.dtype != np.uint8:
        raise DifflabError(f"{path}: 'images' must be uint8 (0..255), got {images.dtype}")
    if images.ndim == 4 and images.shape[3] == 1:
        images = images[..., 0]
    if images.ndim != 3:
        raise DifflabError(f"{path}: 'images' must have shape [N, 28, 28] or [N, 28, 28, 1] (one channel), "
                           f"got {list(images.shape)}")
    if images.shape[1:] != IMAGE_SIZE:
        raise DifflabError(f"{path}: images are {images.shape[1]}x{images.shape[2]} but the feature net takes "
                           f"{IMAGE_SIZE[0]}x{IMAGE_SIZE[1]} Fashion-MNIST images")
    return Samples(images=images)


def _points(path: Path, points: np.ndarray) -> Samples:
    if points.dtype.kind != "f" or points.ndim != 2 or points.shape[1] != 2:
        raise DifflabError(f"{path}: 'points' must be float [N, 2], got {points.dtype} {list(points.shape)}")
    if not np.isfinite(points).all():
        raise DifflabError(f"{path}: 'points' holds NaN or infinite values")
    return Samples(points=points.astype(np.float64))


def _labels(path: Path, labels: np.ndarray, n: int) -> np.ndarray:
    if labels.dtype.kind not in "iu" or labels.shape != (n,):
        raise DifflabError(f"{path}: 'labels' must be integers [{n}], got {labels.dtype} {list(labels.shape)}")
    if labels.min() < 0 or labels.max() >= NUM_CLASSES:
        raise DifflabError(f"{path}: 'labels' must lie in 0..{NUM_CLASSES - 1}, got {labels.min()}..{labels.max()}")
    return labels.astype(np.int64)
