"""The AUTOMATIC1111 web UI's PNG `parameters` text (its "infotext"): written into every image, parsed back by
POST /sdapi/v1/png-info, and the PNG encoding that carries it."""

from __future__ import annotations

import base64
import binascii
import io
import json
import re
from typing import Any

import numpy as np
from PIL import Image, UnidentifiedImageError
from PIL.PngImagePlugin import PngInfo

from difflab.pipelines.dialect import RequestError

# One "Key: value" of the settings line; a value is a JSON string in quotes or runs to the next comma
# (modules/infotext_utils.py re_param_code).
SETTING = re.compile(r'\s*(\w[\w \-/]+):\s*("(?:\\.|[^\\"])+"|[^,]*)(?:,|$)')
SIZE = re.compile(r"^(\d+)x(\d+)$")
NEGATIVE = "Negative prompt: "


def quote(value: Any) -> str:
    """A value as the UI writes it: JSON-quoted when it holds a comma, colon or newline (infotext_utils.quote)."""
    text = str(value)
    return json.dumps(text, ensure_ascii=False) if any(c in text for c in ",:\n") else text


def infotext(prompt: str, negative_prompt: str, settings: dict[str, Any]) -> str:
    """The UI's `parameters` text: the prompt, a "Negative prompt: ..." line when there is one, then one line of
    "Key: value" settings (those that are None or "Automatic" left out)."""
    line = ", ".join(f"{key}: {quote(value)}" for key, value in settings.items() if value not in (None, "Automatic"))
    negative = f"\n{NEGATIVE}{negative_prompt}" if negative_prompt else ""
    return f"{prompt}{negative}\n{line}".strip()


def parse_infotext(text: str) -> dict[str, str]:
    """An infotext back into its fields as the UI's parse_generation_parameters gives them: "Prompt", "Negative
    prompt" and each setting as a string, a size "WxH" split into "<Key>-1" (width) and "<Key>-2" (height)."""
    *lines, last = text.strip().split("\n")
    if len(SETTING.findall(last)) < 3:  # not a settings line: part of the prompt
        lines, last = [*lines, last], ""
    prompt, negative, in_negative = [], [], False
    for line in lines:
        if line.lstrip().startswith(NEGATIVE):
            line, in_negative = line.lstrip()[len(NEGATIVE):], True
        (negative if in_negative else prompt).append(line)
    fields = {"Prompt": "\n".join(prompt), "Negative prompt": "\n".join(negative)}
    for key, value in SETTING.findall(last):
        if len(value) > 1 and value[0] == value[-1] == '"':
            value = json.loads(value)
        size = SIZE.match(value)
        fields.update({f"{key}-1": size[1], f"{key}-2": size[2]} if size else {key: value})
    return fields


def png_base64(image: np.ndarray, parameters: str | None = None) -> str:
    """A uint8 image [H, W] or [H, W, C] as base64 PNG, with the `parameters` text chunk when given."""
    info = PngInfo()
    if parameters is not None:
        info.add_text("parameters", parameters)
    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, format="PNG", pnginfo=info)
    return base64.b64encode(buffer.getvalue()).decode("ascii")


def decode_image(encoded: str, field: str) -> Image.Image:
    """A base64 image (a data:image/ URI is fine), opened but not yet decoded; else a RequestError naming `field`."""
    data = encoded.strip().split(",", 1)[-1] if encoded.strip().startswith("data:image/") else encoded.strip()
    try:
        return Image.open(io.BytesIO(base64.b64decode(data, validate=True)))
    except (binascii.Error, ValueError, UnidentifiedImageError):
        raise RequestError(field, f"{field} must be a base64-encoded image (PNG, or a data:image/ URI)") from None


def read_png_text(encoded: str) -> tuple[str, dict[str, str]]:
    """The `parameters` text ("" when absent) and the other text chunks of a base64 image (a data: URI is fine)."""
    image = decode_image(encoded, "image")
    items = {key: value for key, value in image.info.items() if isinstance(key, str) and isinstance(value, str)}
    return items.pop("parameters", ""), items
