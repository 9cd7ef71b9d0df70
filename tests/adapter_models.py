"""A tiny text-conditional base model and a few subject images, shared by the adapter tests."""

from pathlib import Path

import numpy as np
from PIL import Image

from difflab.text.encoder import TEXT_DIM
from tiny_models import TINY_UNET, write_random_model

SIZE = 8  # images are SIZE x SIZE, one channel


def write_text_model(path: Path, seed: int = 0) -> Path:
    """A randomly initialised (all weights, so every layer matters) tiny text-conditional U-Net on 8x8 images."""
    return write_random_model(path, {"network": {**TINY_UNET, "text_dim": TEXT_DIM},
                                     "schedule": {"kind": "linear", "timesteps": 100},
                                     "train": {"cond": "text"}, "data_shape": [1, SIZE, SIZE]}, seed)


def write_images(folder: Path, n: int = 3) -> Path:
    """n distinct SIZE x SIZE grey images (a bright square at a different place in each)."""
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(n):
        image = np.zeros((SIZE, SIZE), np.uint8)
        image[i: i + 4, i: i + 4] = 220
        Image.fromarray(image).save(folder / f"{i}.png")
    return folder
