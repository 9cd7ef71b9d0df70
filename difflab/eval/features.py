"""Feature-network outputs for a set of uint8 images, batched, and the cached ones of the Fashion-MNIST test set."""

from __future__ import annotations

import functools
import hashlib
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from safetensors import SafetensorError
from safetensors.torch import load as load_bytes
from safetensors.torch import save as save_bytes
from tqdm import tqdm

from difflab.data import load_fashion_mnist
from difflab.eval.feature_net import FEATURE_DIM, NUM_CLASSES, FeatureNet, load_feature_net
from difflab.images import atomic_write


@dataclass(frozen=True)
class Features:
    """Penultimate features [N, 128] and class probabilities [N, 10] of N images, float32."""

    features: torch.Tensor
    probs: torch.Tensor

    def __len__(self) -> int:
        return self.features.shape[0]


def to_model_space(images: torch.Tensor) -> torch.Tensor:
    """uint8 [N, 1, H, W] -> float32 in [-1, 1], as difflab.data.Dataset.batch maps images."""
    return images.float() / 127.5 - 1.0


@torch.no_grad()
def extract(net: FeatureNet, images: np.ndarray | torch.Tensor, batch: int = 1000, progress: bool = False) -> Features:
    """Features of uint8 images [N, 28, 28] or [N, 1, 28, 28], `batch` at a time."""
    images = torch.as_tensor(images)
    images = images.unsqueeze(1) if images.ndim == 3 else images
    features, logits = [], []
    for start in tqdm(range(0, len(images), batch), desc="features", unit="batch", disable=not progress, leave=False):
        f, l = net(to_model_space(images[start: start + batch]))
        features.append(f)
        logits.append(l)
    return Features(torch.cat(features), torch.cat(logits).softmax(1))


@functools.lru_cache(maxsize=1)
def bundled_feature_net() -> tuple[FeatureNet, str]:
    """The shipped feature net and its hash, loaded once per process."""
    return load_feature_net()


def cache_dir() -> Path:
    """$DIFFLAB_CACHE, else $XDG_CACHE_HOME/difflab, else ~/.cache/difflab."""
    default = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "difflab"
    return Path(os.environ.get("DIFFLAB_CACHE", default))


def _read_cache(path: Path, n: int) -> Features | None:
    """The cached features if the file is whole and holds n of each, else None."""
    try:
        tensors = load_bytes(path.read_bytes())
    except (OSError, SafetensorError):
        return None
    features, probs = tensors.get("features"), tensors.get("probs")
    if features is None or probs is None or features.shape != (n, FEATURE_DIM) or probs.shape != (n, NUM_CLASSES):
        return None
    return Features(features, probs)


@functools.lru_cache(maxsize=2)
def reference_features(data_root: str | None = None) -> tuple[Features, torch.Tensor, str]:
    """Features and labels of the 10k Fashion-MNIST test images, and the feature net's hash.

    Computed once per process and kept in DIFFLAB_CACHE (default ~/.cache/difflab) under a name made of the
    feature net's hash and the test set's hash, so a new net or other data never reads stale features.
    """
    net, net_hash = bundled_feature_net()
    test_set = load_fashion_mnist(data_root, "test")
    data_hash = hashlib.sha256(test_set.data.numpy().tobytes() + test_set.labels.numpy().tobytes()).hexdigest()[:16]
    path = cache_dir() / f"fashion-mnist-test-{net_hash}-{data_hash}.safetensors"
    cached = _read_cache(path, len(test_set))
    if cached is not None:
        return cached, test_set.labels, net_hash
    features = extract(net, test_set.data, progress=True)
    payload = save_bytes({"features": features.features.contiguous(), "probs": features.probs.contiguous()})
    try:
        atomic_write(path, lambda f: f.write(payload))
    except OSError:
        pass  # the cache is only a speed-up; an unwritable cache folder costs a recomputation next time
    return features, test_set.labels, net_hash
