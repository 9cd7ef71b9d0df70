"""The AUTOMATIC1111 web UI's vocabulary beside its sampler names (difflab.pipelines.samplers): its schedulers as
grids, and its PNG `parameters` text."""

from __future__ import annotations

import base64
import io

import numpy as np
from PIL import Image
from PIL.PngImagePlugin import PngInfo

from difflab.grids import GridKind
from difflab.pipelines.dialect import RequestError

# The `scheduler` field of newer clients; "Automatic" keeps the grid the sampler name implies.
SCHEDULERS: dict[str, GridKind | None] = {"Automatic": None, "Uniform": "linspace", "Karras": "karras",
                                          "Exponential": "log_snr"}


def scheduler_grid(scheduler: str | None) -> GridKind | None:
    """The grid a `scheduler` asks for; None (also for "Automatic") keeps the one the sampler name implies."""
    if scheduler is not None and scheduler not in SCHEDULERS:
        raise RequestError("scheduler", f"scheduler must be one of {', '.join(SCHEDULERS)}; got {scheduler!r}")
    return SCHEDULERS.get(scheduler or "Automatic")


def infotext(*, prompt: str, steps: int, sampler: str, scheduler: str | None, cfg_scale: float,
             seed: int, width: int, height: int, model_name: str, model_hash: str, negative_prompt: str = "") -> str:
    """The UI's `parameters` text: the prompt, a "Negative prompt: ..." line when there is one, then one line of
    "Key: value" settings."""
    settings = {"Steps": steps, "Sampler": sampler, "Schedule type": scheduler, "CFG scale": f"{cfg_scale:g}",
                "Seed": seed, "Size": f"{width}x{height}", "Model hash": model_hash, "Model": model_name}
    line = ", ".join(f"{key}: {value}" for key, value in settings.items() if value not in (None, "Automatic"))
    negative = f"\nNegative prompt: {negative_prompt}" if negative_prompt else ""
    return f"{prompt}{negative}\n{line}".strip()


def png_base64(image: np.ndarray, parameters: str | None = None) -> str:
    """A uint8 image [H, W] or [H, W, C] as base64 PNG, with the `parameters` text chunk when given."""
    info = PngInfo()
    if parameters is not None:
        info.add_text("parameters", parameters)
    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, format="PNG", pnginfo=info)
    return base64.b64encode(buffer.getvalue()).decode("ascii")
