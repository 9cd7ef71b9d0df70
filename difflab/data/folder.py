"""A folder of PNG/JPEG images (one level of subfolders becomes class labels)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError

from difflab.data.dataset import Dataset
from difflab.errors import DifflabError

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg"}


def load_image_folder(root: str | Path) -> Dataset:
    """All images under `root`, which must share one size and mode; subfolder names become classes."""
    root = Path(root)
    files = sorted(p for p in root.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES)
    if not files:
        raise DifflabError(f"--data {root}: no PNG or JPEG images found")
    subfolders = sorted({p.parent.relative_to(root).as_posix() for p in files})
    labelled = len(subfolders) > 1 and "." not in subfolders
    arrays = []
    for path in files:
        try:
            with Image.open(path) as image:
                mode = "L" if image.mode in ("L", "1", "I", "I;16") else "RGB"
                arrays.append(np.asarray(image.convert(mode)))
        except (UnidentifiedImageError, OSError) as err:
            raise DifflabError(f"--data {root}: cannot read image {path}: {err}") from None
        if arrays[-1].shape != arrays[0].shape:
            raise DifflabError(
                f"--data {root}: {path} has shape {arrays[-1].shape} but {files[0]} has {arrays[0].shape}; "
                "resize the images to one size first"
            )
    data = torch.from_numpy(np.stack(arrays))
    data = data.unsqueeze(1) if data.ndim == 3 else data.permute(0, 3, 1, 2).contiguous()
    labels = None
    if labelled:
        index = {name: i for i, name in enumerate(subfolders)}
        labels = torch.tensor([index[p.parent.relative_to(root).as_posix()] for p in files])
    return Dataset(
        name=root.name, kind="image", data=data, labels=labels,
        class_names=tuple(subfolders) if labelled else None,
    )
