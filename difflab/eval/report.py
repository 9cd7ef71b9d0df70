"""All metrics of one sample set against its reference, as a flat dict (for --json) or a printed table."""

from __future__ import annotations

import numpy as np
import torch

from difflab.eval.classes import class_coverage, class_shares, label_accuracy
from difflab.eval.features import Features, bundled_feature_net, extract, reference_features
from difflab.eval.frechet import frechet_distance_of
from difflab.eval.kid import kernel_inception_distance
from difflab.eval.manifold import precision_recall
from difflab.eval.toy_metrics import energy_distance, knn_kl_divergence, ks_per_axis, sliced_wasserstein

# key -> how the table names it
DESCRIPTIONS = {
    "source": "evaluated",
    "sampler": "sampler",
    "steps": "sampler steps",
    "sigmas": "noise levels (--sigmas, or the chosen ones)",
    "generate_seconds": "sampling time (s)",
    "n": "samples",
    "reference": "reference set",
    "feature_net": "feature net (hash)",
    "fd": "FD (Frechet distance, lower is better)",
    "kid": "KID (unbiased MMD^2, lower is better)",
    "kid_std": "KID std over subsets",
    "precision": "precision (k-NN, higher is better)",
    "recall": "recall (k-NN, higher is better)",
    "class_coverage": "class coverage (classes with >= 5% of samples)",
    "class_shares": "share of samples per predicted class",
    "accuracy": "accuracy against requested labels",
    "swd": "sliced Wasserstein SW_1 (lower is better)",
    "energy": "energy distance (lower is better)",
    "ks": "Kolmogorov-Smirnov D per axis",
    "kl_data_samples": "KL(data || samples), k-NN estimate",
    "kl_samples_data": "KL(samples || data), k-NN estimate",
    "eval_seconds": "evaluation time (s)",
}


def evaluate_images(images: np.ndarray, labels: np.ndarray | None = None, *, data_root: str | None = None,
                    k: int = 3, kid_subsets: int = 100, seed: int = 0, progress: bool = False) -> dict:
    """Metrics of uint8 images [N, 28, 28] against the Fashion-MNIST test set in the feature net's space."""
    samples = extract(bundled_feature_net()[0], images, progress=progress)
    return evaluate_features(samples, labels, data_root=data_root, k=k, kid_subsets=kid_subsets, seed=seed)


def frechet_distance_of_images(images: np.ndarray) -> float:
    """FD alone (evaluate_images' first metric) of uint8 images [N, 28, 28] against the Fashion-MNIST test set."""
    return frechet_distance_of(extract(bundled_feature_net()[0], images).features, reference_features()[0].features)


def evaluate_features(samples: Features, labels: np.ndarray | None = None, *, data_root: str | None = None,
                      k: int = 3, kid_subsets: int = 100, seed: int = 0) -> dict:
    """evaluate_images' metrics of samples already in the feature net's space (extract).

    Precision and recall use equally many points from both sets (the smaller size), as k-NN radii shrink with N.
    """
    reference, _, net_hash = reference_features(data_root)
    size = min(len(samples), len(reference))
    generator = torch.Generator().manual_seed(seed)
    real = reference.features[torch.randperm(len(reference), generator=generator)[:size]]
    fake = samples.features[torch.randperm(len(samples), generator=generator)[:size]]
    precision, recall = precision_recall(real, fake, k)
    kid, kid_std = kernel_inception_distance(samples.features, reference.features, kid_subsets, seed=seed)
    metrics = {
        "n": len(samples), "reference": f"fashion-mnist test ({len(reference)})", "feature_net": net_hash,
        "fd": frechet_distance_of(samples.features, reference.features), "kid": kid, "kid_std": kid_std,
        "precision": precision, "recall": recall, "class_coverage": class_coverage(samples.probs),
        "class_shares": [round(s, 4) for s in class_shares(samples.probs).tolist()],
    }
    if labels is not None:
        metrics["accuracy"] = label_accuracy(samples.probs, torch.as_tensor(labels))
    return metrics


def evaluate_points(points: torch.Tensor, reference: torch.Tensor, reference_name: str, k: int = 3) -> dict:
    """Metrics of 2-D points [N, 2] against a fresh draw `reference` [M, 2] of the data distribution."""
    points, reference = torch.as_tensor(points).double(), reference.double()
    return {
        "n": len(points), "reference": f"{reference_name} ({len(reference)} fresh draws)",
        "swd": sliced_wasserstein(points, reference), "energy": energy_distance(points, reference),
        "ks": ks_per_axis(points, reference),
        "kl_data_samples": knn_kl_divergence(reference, points, k),
        "kl_samples_data": knn_kl_divergence(points, reference, k),
    }


def _format(value) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    if isinstance(value, list):
        return " ".join(_format(v) for v in value)
    return str(value)


def format_table(metrics: dict) -> str:
    """Two columns, description and value; keys without a description are shown by name."""
    rows = [(DESCRIPTIONS.get(key, key), _format(value)) for key, value in metrics.items()]
    width = max(len(name) for name, _ in rows)
    return "\n".join(f"{name:<{width}}  {value}" for name, value in rows)
