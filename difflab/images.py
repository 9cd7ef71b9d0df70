"""Conversions between model space ([-1, 1] floats) and image files (PNG grids, .npz archives)."""

from __future__ import annotations

import math
import os
import tempfile
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from difflab.errors import DifflabError


_UMASK = os.umask(0)  # read once at import (setting it is process-wide, so never while threads write files)
os.umask(_UMASK)


def to_uint8(x: torch.Tensor) -> np.ndarray:
    """[N, C, H, W] in [-1, 1] -> uint8 [N, H, W] (one channel) or [N, H, W, C]."""
    images = ((x.float().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)
    images = images.permute(0, 2, 3, 1).cpu().numpy()
    return images[..., 0] if images.shape[-1] == 1 else images


def image_grid(images: np.ndarray, columns: int | None = None, pad: int = 2) -> Image.Image:
    """Tile uint8 images [N, H, W(, C)] into one picture with `pad` pixels of black between them."""
    n, h, w = images.shape[:3]
    columns = columns or math.ceil(math.sqrt(n))
    rows = math.ceil(n / columns)
    shape = (rows * (h + pad) + pad, columns * (w + pad) + pad) + images.shape[3:]
    canvas = np.zeros(shape, dtype=np.uint8)
    for i, image in enumerate(images):
        r, c = divmod(i, columns)
        canvas[pad + r * (h + pad): pad + r * (h + pad) + h, pad + c * (w + pad): pad + c * (w + pad) + w] = image
    return Image.fromarray(canvas)


def atomic_write(path: str | Path, write) -> None:
    """Call write(file_object) on a temporary file beside `path`, fsync it, then rename it over `path`."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.fchmod(fd, 0o666 & ~_UMASK)  # mkstemp creates 0600; give the file the mode a plain open() would
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    dir_fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


def save_png_grid(x: torch.Tensor, path: str | Path, columns: int | None = None) -> None:
    grid = image_grid(to_uint8(x), columns)
    atomic_write(path, lambda f: grid.save(f, format="PNG"))


def save_points_plot(points: torch.Tensor, path: str | Path, title: str = "") -> None:
    """Scatter plot of 2-D samples."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5, 5))
    p = points.float().cpu().numpy()
    ax.scatter(p[:, 0], p[:, 1], s=2, alpha=0.5)
    ax.set_aspect("equal")
    ax.set_title(title)
    atomic_write(path, lambda f: fig.savefig(f, format="png", dpi=100, bbox_inches="tight"))
    plt.close(fig)


def save_samples(x: torch.Tensor, path: str | Path, labels: torch.Tensor | None = None, title: str = "") -> None:
    """Write samples as a PNG (image grid, or scatter plot for points) or .npz (`images` uint8 or `points`)."""
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix not in (".png", ".npz"):
        raise DifflabError(f"--out must end in .png or .npz, got {path.name!r}")
    points = x.ndim == 2
    if suffix == ".png":
        save_points_plot(x, path, title) if points else save_png_grid(x, path)
        return
    arrays = {"points": x.float().cpu().numpy()} if points else {"images": to_uint8(x)}
    if labels is not None:
        arrays["labels"] = labels.cpu().numpy()
    atomic_write(path, lambda f: np.savez_compressed(f, **arrays))
