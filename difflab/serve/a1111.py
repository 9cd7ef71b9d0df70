"""The AUTOMATIC1111 web UI's vocabulary: its sampler names as difflab sampler + grid, and its PNG `parameters` text."""

from __future__ import annotations

import base64
import io
from dataclasses import dataclass

import numpy as np
from PIL import Image
from PIL.PngImagePlugin import PngInfo

from difflab.grids import GridKind
from difflab.samplers import SAMPLERS
from difflab.serve.schemas import RequestError


@dataclass(frozen=True)
class SamplerName:
    """One sampler as that UI names it (with the aliases its API accepts) and what runs it here."""

    name: str
    sampler: str  # difflab registry name
    grid: GridKind
    aliases: tuple[str, ...] = ()


# The UI's names (modules/sd_samplers_kdiffusion.py and sd_samplers_timesteps.py). Its "Automatic" schedule on a
# discrete model is k-diffusion's DiscreteSchedule.get_sigmas, timesteps evenly spaced from T-1 down to 0 ("linspace");
# "Karras" is Karras et al. 2022, Eq. 5 with rho = 7; "Exponential" is uniform in log sigma ("log_snr"); DDIM, PLMS
# and UniPC use CompVis' uniform timestep spacing ("leading"). Only entries whose sampler is registered are offered.
SAMPLER_NAMES: tuple[SamplerName, ...] = (
    SamplerName("Euler a", "euler_ancestral", "linspace", ("k_euler_a", "k_euler_ancestral")),
    SamplerName("Euler", "euler", "linspace", ("k_euler",)),
    SamplerName("LMS", "lms", "linspace", ("k_lms",)),
    SamplerName("Heun", "heun", "linspace", ("k_heun",)),
    SamplerName("DPM2", "dpm_2", "linspace", ("k_dpm_2",)),
    SamplerName("DPM2 a", "dpm_2_ancestral", "linspace", ("k_dpm_2_a",)),
    SamplerName("DPM++ 2S a", "dpmpp_2s_ancestral", "linspace", ("k_dpmpp_2s_a",)),
    SamplerName("DPM++ 2M", "dpmpp_2m", "linspace", ("k_dpmpp_2m",)),
    SamplerName("DPM++ SDE", "dpmpp_sde", "linspace", ("k_dpmpp_sde",)),
    SamplerName("DPM++ 2M SDE", "dpmpp_2m_sde", "linspace", ("k_dpmpp_2m_sde",)),
    SamplerName("DPM++ 3M SDE", "dpmpp_3m_sde", "linspace", ("k_dpmpp_3m_sde",)),
    SamplerName("LMS Karras", "lms", "karras", ("k_lms_ka",)),
    SamplerName("DPM2 Karras", "dpm_2", "karras", ("k_dpm_2_ka",)),
    SamplerName("DPM2 a Karras", "dpm_2_ancestral", "karras", ("k_dpm_2_a_ka",)),
    SamplerName("DPM++ 2S a Karras", "dpmpp_2s_ancestral", "karras", ("k_dpmpp_2s_a_ka",)),
    SamplerName("DPM++ 2M Karras", "dpmpp_2m", "karras", ("k_dpmpp_2m_ka",)),
    SamplerName("DPM++ SDE Karras", "dpmpp_sde", "karras", ("k_dpmpp_sde_ka",)),
    SamplerName("DPM++ 2M SDE Karras", "dpmpp_2m_sde", "karras", ("k_dpmpp_2m_sde_ka",)),
    SamplerName("DPM++ 2M SDE Exponential", "dpmpp_2m_sde", "log_snr", ("k_dpmpp_2m_sde_exp",)),
    SamplerName("DPM++ 3M SDE Karras", "dpmpp_3m_sde", "karras", ("k_dpmpp_3m_sde_ka",)),
    SamplerName("DPM++ 3M SDE Exponential", "dpmpp_3m_sde", "log_snr", ("k_dpmpp_3m_sde_exp",)),
    SamplerName("DDIM", "ddim", "leading", ("ddim",)),
    SamplerName("PLMS", "plms", "leading", ("plms",)),
    SamplerName("UniPC", "unipc", "leading", ("unipc",)),
)

# The `scheduler` field of newer clients; "Automatic" keeps the grid the sampler name implies.
SCHEDULERS: dict[str, GridKind | None] = {"Automatic": None, "Uniform": "linspace", "Karras": "karras",
                                          "Exponential": "log_snr"}


def offered_samplers() -> list[SamplerName]:
    """The entries whose difflab sampler is registered, in the UI's order; the first is the default."""
    return [entry for entry in SAMPLER_NAMES if entry.sampler in SAMPLERS]


def resolve_sampler(name: str | None, scheduler: str | None) -> tuple[SamplerName, GridKind]:
    """The entry for a sampler name or alias (any case) and the grid it runs on; unknown names are a RequestError."""
    offered = offered_samplers()
    if name is None:
        entry = offered[0]
    else:
        matches = [e for e in SAMPLER_NAMES if name.lower() in (e.name.lower(), *e.aliases)]
        valid = ", ".join(e.name for e in offered)
        if not matches:
            raise RequestError("sampler_name", f"sampler_name must be one of {valid}; got {name!r}")
        entry = matches[0]
        if entry not in offered:
            raise RequestError("sampler_name", f"sampler_name {name!r} needs sampler {entry.sampler!r}, which difflab "
                                               f"does not have yet; choose from {valid}")
    if scheduler is not None and scheduler not in SCHEDULERS:
        raise RequestError("scheduler", f"scheduler must be one of {', '.join(SCHEDULERS)}; got {scheduler!r}")
    return entry, SCHEDULERS.get(scheduler or "Automatic") or entry.grid


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
