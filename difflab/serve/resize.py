"""Serving a size other than the model's: images made at the model's size, then resized with Pillow by a method named
as the web UI names its upscalers (GET /sdapi/v1/upscalers, the `hr_upscaler` field); or, when a request asks for it
(difflab_size_by "model"), a convolutional model run at that size."""

from __future__ import annotations

import numpy as np
from PIL import Image

from difflab.nets.unet import UNetConfig
from difflab.pipelines.dialect import RequestError

# upscaler name -> Pillow filter. "None" is the UI's "no upscaler model", which resizes with Lanczos
# (modules/images.py resize_image); "Bilinear" and "Bicubic" are difflab's additions.
UPSCALERS = {"None": Image.Resampling.LANCZOS, "Lanczos": Image.Resampling.LANCZOS,
             "Nearest": Image.Resampling.NEAREST, "Bilinear": Image.Resampling.BILINEAR,
             "Bicubic": Image.Resampling.BICUBIC}
DEFAULT_UPSCALER = "Lanczos"
MAX_SIDE = 2048  # width and height
MAX_PIXELS = 64 * 512 * 512  # over all images of a request: 64 at 512x512, 4 at 2048x2048


def resize(images: np.ndarray, width: int, height: int, upscaler: str) -> np.ndarray:
    """uint8 images [N, H, W] or [N, H, W, C] stretched to height x width by `upscaler`'s filter (the UI's "Just
    resize")."""
    return np.stack([np.asarray(Image.fromarray(image).resize((width, height), UPSCALERS[upscaler]))
                     for image in images]) if len(images) else images


def model_shape_at(config, width: int, height: int, name: str) -> tuple[int, int, int]:
    """The sample shape [C, height, width] of a U-Net run at another size than it was trained at: any size its
    downsampling divides (2 per level below the first); other networks (a DiT's patch grid, an MLP) have one size."""
    if not isinstance(config.network, UNetConfig):
        raise RequestError("difflab_size_by", f"difflab_size_by model needs a convolutional network (a U-Net); model "
                                              f"{name} is not one, so another size is made by hr_upscaler")
    factor = config.network.size_factor
    for field, value in (("width", width), ("height", height)):
        if value % factor:
            raise RequestError(field, f"{field} must be a multiple of {factor} to run model {name} at that size "
                                      f"(difflab_size_by model); got {value}")
    return config.data_shape[0], height, width
