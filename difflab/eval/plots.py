"""Figures from measured numbers (PNG, written atomically): sample grids side by side, FD against network
evaluations per sampler, and the guidance-scale trade-off between FD and another metric."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np

from difflab.images import atomic_write, image_grid


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _save(fig, path: str | Path) -> None:
    fig.tight_layout()
    atomic_write(path, lambda f: fig.savefig(f, format="png", dpi=110, bbox_inches="tight"))
    _pyplot().close(fig)


def plot_sample_grids(grids: Mapping[str, np.ndarray], path: str | Path, columns: int | None = None) -> None:
    """One titled panel per named set of uint8 images [N, H, W(, C)], e.g. one per sampler or guidance scale."""
    plt = _pyplot()
    fig, axes = plt.subplots(1, len(grids), figsize=(3 * len(grids), 3.3), squeeze=False)
    for ax, (title, images) in zip(axes[0], grids.items()):
        ax.imshow(np.asarray(image_grid(images, columns)), cmap="gray", vmin=0, vmax=255)
        ax.set_title(title, fontsize=9)
        ax.axis("off")
    _save(fig, path)


def plot_fd_vs_nfe(curves: Mapping[str, Sequence[tuple[int, float]]], path: str | Path, metric: str = "FD") -> None:
    """One line per sampler through its (network evaluations, metric) points, both axes logarithmic."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(5.5, 4))
    for name, points in curves.items():
        nfe, values = zip(*sorted(points))
        ax.plot(nfe, values, marker="o", label=name)
    ax.set(xscale="log", yscale="log", xlabel="network evaluations (NFE)", ylabel=metric)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8)
    _save(fig, path)


def plot_guidance_tradeoff(scales: Sequence[float], fd: Sequence[float], others: Mapping[str, Sequence[float]],
                           path: str | Path, symbol: str = "w") -> None:
    """FD against each other metric (e.g. precision, recall, accuracy), one panel each, points labelled by scale
    (`symbol`: w for classifier-free guidance, s for classifier guidance)."""
    plt = _pyplot()
    fig, axes = plt.subplots(1, len(others), figsize=(4.5 * len(others), 4), squeeze=False)
    for ax, (name, values) in zip(axes[0], others.items()):
        ax.plot(values, fd, marker="o")
        for scale, x, y in zip(scales, values, fd):
            ax.annotate(f"{symbol}={scale:g}", (x, y), textcoords="offset points", xytext=(4, 4), fontsize=8)
        ax.set(xlabel=name, ylabel="FD", title=f"FD vs {name} over guidance scale {symbol}")
        ax.grid(True, alpha=0.3)
    _save(fig, path)
