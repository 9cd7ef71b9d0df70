"""Input images and masks for editing, prepared as the AUTOMATIC1111 web UI prepares them (modules/processing.py
StableDiffusionProcessingImg2Img.init, modules/images.py resize_image, modules/masking.py fill).

Images become float64 tensors [C, H, W] in [-1, 1] at the model's size; a mask becomes a float [H, W] in [0, 1],
1 where the image is repainted. Errors name the field they came from, as the caller spells it.
"""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError
from scipy.ndimage import gaussian_filter, gaussian_filter1d

from difflab.pipelines.dialect import RequestError

# the web UI's resize_mode 0..3: "Just resize", "Crop and resize", "Resize and fill", "Just resize (latent upscale)"
RESIZE_MODES = ("just", "crop", "fill", "latent")
FILL_RADII = ((256, 1), (64, 1), (16, 2), (4, 4), (2, 2), (0, 1))  # masking.fill: (blur radius, repeats)


def open_image(source: str | Path | bytes, field: str) -> Image.Image:
    """A Pillow image from a file path or the bytes of an image file; anything else is an error naming `field`."""
    try:
        image = Image.open(io.BytesIO(source) if isinstance(source, bytes) else source)
        image.load()
    except (OSError, UnidentifiedImageError, ValueError) as err:
        raise RequestError(field, f"{field} is not a readable image ({err})") from None
    return image


def image_array(image: Image.Image, channels: int, field: str) -> np.ndarray:
    """uint8 [H, W, channels] of an opaque image; a colour image for a one-channel model is refused unless its
    three channels are equal (a grey image stored as RGB)."""
    rgba = np.asarray(image.convert("RGBA"))
    if (rgba[..., 3] < 255).any():
        raise RequestError(field, f"{field} has transparent pixels; give an opaque image")
    rgb = rgba[..., :3]
    if channels == 3:
        return rgb
    if channels == 1:
        if (rgb != rgb[..., :1]).any():
            raise RequestError(field, f"{field} is a colour image and the model makes one-channel (grey) images; "
                                      "convert it to greyscale first")
        return rgb[..., :1]
    raise RequestError(field, f"{field}: the model makes {channels}-channel images; only 1 (grey) or 3 (RGB) are "
                              "read from image files")


def resize(array: np.ndarray, height: int, width: int, mode: str | None, field: str) -> np.ndarray:
    """float32 [H, W, C] brought to height x width by the web UI's resize_mode (Lanczos as its "None" upscaler):
    just (stretch), crop (cover, then centre-crop), fill (fit, then stretch the edge rows and columns into the gaps),
    latent (stretch bilinearly: the web UI resizes the latents bilinearly, which for a pixel model is this; for a
    latent model difflab resizes the pixels before encoding). None refuses another size."""
    h, w = array.shape[:2]
    if (h, w) == (height, width):
        return array
    if mode is None:
        raise RequestError(field, f"{field} is {w}x{h}, the model's images are {width}x{height}; resize it, or ask "
                                  f"for a resize mode ({', '.join(RESIZE_MODES)})")
    if mode not in RESIZE_MODES:
        raise RequestError("resize_mode", f"resize mode must be one of {', '.join(RESIZE_MODES)}, got {mode!r}")
    ratio, source_ratio = width / height, w / h
    if mode in ("just", "latent"):
        size = (width, height)
    elif (mode == "crop") == (ratio > source_ratio):  # crop covers the box, fill fits into it
        size = (width, max(1, h * width // w))
    else:
        size = (max(1, w * height // h), height)
    resample = Image.Resampling.BILINEAR if mode == "latent" else Image.Resampling.LANCZOS
    stretched = np.stack([np.asarray(Image.fromarray(array[..., c]).resize(size, resample))
                          for c in range(array.shape[2])], axis=-1)
    top, left = height // 2 - size[1] // 2, width // 2 - size[0] // 2  # resize_image pastes it centred
    if mode == "crop":
        return stretched[-top: -top + height, -left: -left + width]
    if mode == "fill":
        return np.pad(stretched, ((top, height - size[1] - top), (left, width - size[0] - left), (0, 0)), mode="edge")
    return stretched


def prepare_image(image: Image.Image, shape: tuple[int, ...], resize_mode: str | None, field: str) -> torch.Tensor:
    """[C, H, W] float64 in [-1, 1] at the model's `shape` (C, H, W)."""
    array = image_array(image, shape[0], field).astype(np.float32)
    array = resize(array, shape[1], shape[2], resize_mode, field)
    return torch.from_numpy(np.clip(array, 0, 255) / 127.5 - 1).permute(2, 0, 1).double()


def blur(mask: np.ndarray, blur_x: float, blur_y: float) -> np.ndarray:
    """The web UI's mask blur: cv2.GaussianBlur along x then y, kernel 2 int(4 sigma + 0.5) + 1, reflect-101 border."""
    for axis, sigma in ((1, blur_x), (0, blur_y)):
        if sigma > 0:
            mask = gaussian_filter1d(mask, sigma, axis=axis, mode="mirror", truncate=4.0)
    return mask


def prepare_mask(image: Image.Image, height: int, width: int, *, resize_mode: str | None, blur_x: float = 0.0,
                 blur_y: float = 0.0, invert: bool = False, field: str = "mask") -> torch.Tensor:
    """The repaint mask [H, W] in [0, 1] at the model's size: grey levels / 255 (white is repainted), inverted if
    asked (inpainting_mask_invert), blurred, then resized like the image (the web UI's order)."""
    if blur_x < 0 or blur_y < 0:
        raise RequestError("mask_blur", f"mask blur must be >= 0, got {min(blur_x, blur_y):g}")
    mask = np.asarray(image.convert("L"), dtype=np.float32) / 255
    mask = blur(1 - mask if invert else mask, blur_x, blur_y)
    mask = resize(mask[..., None], height, width, "just" if resize_mode == "latent" else resize_mode, field)[..., 0]
    return torch.from_numpy(np.clip(mask, 0, 1)).double()


def overlay_mask(mask: torch.Tensor) -> torch.Tensor:
    """How much of the generated image shows at each pixel: the web UI's mask_for_overlay, clip(2 m, 0, 1), so the
    result covers the blurred mask's inner half fully and the original shows unchanged where the mask is 0."""
    return (2 * mask).clamp(0, 1)


def fill(image: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """inpainting_fill "fill" (masking.fill): the masked pixels of image [C, H, W] replaced by colours blurred in
    from the unmasked ones, composited over from wide to narrow Gaussian radii; unmasked pixels are unchanged."""
    keep = (1 - mask).numpy()
    premultiplied = (image.numpy() + 1) / 2 * keep  # colour times alpha (Pillow's RGBa)
    colour, alpha = np.zeros_like(premultiplied), np.zeros_like(keep)
    for radius, repeats in FILL_RADII:
        source = gaussian_filter(premultiplied, (0, radius, radius), mode="nearest")
        source_alpha = gaussian_filter(keep, radius, mode="nearest")
        for _ in range(repeats):
            # Porter-Duff "over" in premultiplied form: C = C_src + C_dst (1 - a_src), a = a_src + a_dst (1 - a_src)
            colour = source + colour * (1 - source_alpha)
            alpha = source_alpha + alpha * (1 - source_alpha)
    filled = torch.from_numpy(colour / np.maximum(alpha, 1e-12)) * 2 - 1
    return torch.where(torch.from_numpy(keep) == 1, image, filled.clamp(-1, 1))
