"""The web UI's read-only listing routes, answered in its response shapes from what difflab has: schedulers and
upscalers (resize methods and super-resolution models), memory, the server's flags, and empty lists where difflab has
no such thing (VAEs, scripts, extensions, ...); LoRAs and embeddings are difflab.serve.adapters'."""

from __future__ import annotations

import os
import sys
from collections.abc import Sequence
from typing import Any

import torch
from fastapi import APIRouter

from difflab.pipelines.samplers import offered_schedulers
from difflab.serve.resize import UPSCALERS
from difflab.serve.stages import LATENT_UPSCALE_MODES
from difflab.serve.upscalers import UpscalerModel

UPSCALER_SCALE = 4  # the scale the UI lists for its Lanczos and Nearest upscalers
EMPTY_LISTS = ("sd-vae", "extensions", "script-info", "hypernetworks", "face-restorers", "realesrgan-models",
               "prompt-styles")


def ram() -> dict[str, Any]:
    """The process's resident memory as the UI reports it: used = RSS, free = total - RSS (Linux /proc)."""
    try:
        with open("/proc/self/statm") as statm:
            rss = int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
        total = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (OSError, ValueError, IndexError) as err:
        return {"error": f"{err} (resident memory is read from /proc on Linux; this is {sys.platform})"}
    return {"free": total - rss, "used": rss, "total": total}


def cuda_memory() -> dict[str, Any]:
    """The CUDA device's memory and the caching allocator's statistics, in the UI's shape."""
    if not torch.cuda.is_available():
        return {"error": "unavailable"}
    free, total = torch.cuda.mem_get_info()
    stats = torch.cuda.memory_stats()

    def pair(key: str) -> dict[str, int]:
        return {"current": stats.get(f"{key}.all.current", 0), "peak": stats.get(f"{key}.all.peak", 0)}

    return {"system": {"free": free, "used": total - free, "total": total}, "active": pair("active_bytes"),
            "allocated": pair("allocated_bytes"), "reserved": pair("reserved_bytes"),
            "inactive": pair("inactive_split_bytes"),
            "events": {"retries": stats.get("num_alloc_retries", 0), "oom": stats.get("num_ooms", 0)}}


def listings(flags: dict[str, Any], upscaler_models: Sequence[UpscalerModel] = ()) -> APIRouter:
    """The routes; `flags` is what GET /sdapi/v1/cmd-flags answers (the serve command's flags), `upscaler_models`
    the super-resolution models hr_upscaler may name (--upscaler-dir)."""
    router = APIRouter(prefix="/sdapi/v1", tags=["listings"])

    @router.get("/schedulers")
    async def schedulers() -> list[dict]:
        """The schedulers this server runs, with the difflab grid behind each."""
        return [{"name": s.name, "label": s.label, "aliases": list(s.aliases) or None, "default_rho": s.default_rho,
                 "need_inner_model": s.need_inner_model, "grid": s.grid} for s in offered_schedulers()]

    @router.get("/upscalers")
    async def upscalers() -> list[dict]:
        """The resize methods a request's hr_upscaler names (images are resized with Pillow), then the
        super-resolution models it may name (--upscaler-dir)."""
        return [*({"name": name, "model_name": None, "model_path": None, "model_url": None, "scale": UPSCALER_SCALE}
                  for name in UPSCALERS), *(model.item() for model in upscaler_models)]

    @router.get("/latent-upscale-modes")
    async def latent_upscale_modes() -> list[dict]:
        """The hires fix's latent upscalers (hr_upscaler), as the UI lists them."""
        return [{"name": name} for name in LATENT_UPSCALE_MODES]

    @router.get("/scripts")
    async def scripts() -> dict:
        return {"txt2img": [], "img2img": []}

    @router.get("/memory")
    async def memory() -> dict:
        return {"ram": ram(), "cuda": cuda_memory()}

    @router.get("/cmd-flags")
    async def cmd_flags() -> dict:
        return flags

    async def empty() -> list:
        return []

    for path in EMPTY_LISTS:
        router.add_api_route(f"/{path}", empty, methods=["GET"], name=path, summary=f"{path}: none in difflab")
    return router
