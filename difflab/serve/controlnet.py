"""The sd-webui-controlnet extension's API: `alwayson_scripts: {"controlnet": {"args": [unit, ...]}}` on txt2img,
and its routes GET /controlnet/model_list, GET /controlnet/module_list, POST /controlnet/detect, GET
/controlnet/version and GET /controlnet/settings, in the extension's shapes (scripts/api.py,
internal_controlnet/external_code.py ControlNetUnit), so its clients work.

A unit's `module` is the preprocessor (difflab's annotators, or "none": the image is the map), `model` a ControlNet
title from /controlnet/model_list ("name [hash]", or the bare name), `weight` its scale, `guidance_start` /
`guidance_end` fractions of the steps, `control_mode` "Balanced", "My prompt is more important" or "ControlNet is
more important" (or 0, 1, 2), `resize_mode` "Just Resize", "Crop and Resize" (the default) or "Resize and Fill" (or
0, 1, 2). Annotators always run at the model's resolution, so `processor_res`, `pixel_perfect`, `threshold_a/b` and
`low_vram` change nothing. Units with `enabled: false` are skipped. A bad unit is a 422 naming
`alwayson_scripts.controlnet.args[i].<field>`.
"""

from __future__ import annotations

import base64
import binascii
import io
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fastapi import APIRouter, Body
from PIL import Image, UnidentifiedImageError
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from difflab.annotators import ANNOTATORS, CONTROL_TYPES
from difflab.errors import DifflabError
from difflab.images import to_uint8
from difflab.nets.controlnet import ControlNet, check_fits
from difflab.pipelines.control import RESIZE_MODES, ControlUnit, control_map
from difflab.pipelines.dialect import RequestError
from difflab.serve.a1111 import png_base64
from difflab.train.checkpoint import sha256_file

ASSETS = Path(__file__).resolve().parent.parent / "assets"
SCRIPT = "controlnet"
MODULES = ("none", *CONTROL_TYPES)
CONTROL_MODES = {"Balanced": "balanced", "My prompt is more important": "prompt",
                 "ControlNet is more important": "controlnet"}  # the extension's ControlMode values, in its order
RESIZE_ALIASES = {"Inner Fit (Scale to Fit)": "Crop and Resize", "Outer Fit (Shrink to Fit)": "Resize and Fill",
                  "Scale to Fit (Inner Fit)": "Crop and Resize", "Envelope (Outer Fit)": "Resize and Fill",
                  "Just Resize (Latent upscale)": "Just Resize"}  # external_code.resize_mode_aliases
NO_EFFECT = ("processor_res", "threshold_a", "threshold_b", "pixel_perfect", "low_vram")  # annotators run at model size


def read_metadata(path: Path) -> dict[str, str]:
    """A safetensors file's metadata, from its header alone."""
    with open(path, "rb") as f:
        size = int.from_bytes(f.read(8), "little")
        return json.loads(f.read(size)).get("__metadata__") or {}


@dataclass(frozen=True)
class ControlNetEntry:
    name: str
    path: Path
    sha256: str
    control: str  # the annotator it was trained on

    @property
    def title(self) -> str:
        return f"{self.name} [{self.sha256[:8]}]"  # the extension lists "control_v11p_sd15_canny [d14c016b]"


class ControlNetCatalog:
    """The ControlNet components below the given folders (`difflab serve --controlnet-dir`, the bundled ones), each
    loaded once when first used."""

    def __init__(self, folders: list[Path] = ()):
        self.folders = [Path(f) for f in folders]
        self.loaded: dict[str, ControlNet] = {}
        self.refresh()

    @classmethod
    def with_bundled(cls, folder: Path | None = None) -> ControlNetCatalog:
        """The bundled ControlNets (difflab/assets/controlnet_*) and those below `folder`."""
        return cls([*sorted(ASSETS.glob("controlnet_*")), *([folder] if folder is not None else [])])

    def refresh(self) -> None:
        entries = {}
        for folder in self.folders:
            for path in sorted(folder.rglob("*.safetensors")):
                try:
                    metadata = read_metadata(path)
                    if metadata.get("kind") != "controlnet" or metadata.get("optimizer_groups"):
                        continue  # another component, or a run still training
                    control = json.loads(metadata["config"])["network"]["control"]
                except (OSError, ValueError, KeyError, TypeError):
                    continue  # not a component file
                name = path.parent.name if path.stem == "controlnet" else path.stem
                entry = ControlNetEntry(name, path, sha256_file(path), control)
                entries.setdefault(entry.title, entry)
        self.entries = list(entries.values())

    def find(self, model: str, field: str) -> ControlNetEntry:
        for entry in self.entries:
            if model in (entry.title, entry.name, entry.path.stem):
                return entry
        offered = ", ".join(e.title for e in self.entries) or "none: start the server with --controlnet-dir DIR"
        raise RequestError(field, f"{field} must be a ControlNet from GET /controlnet/model_list ({offered}); "
                                  f"got {model!r}")

    def load(self, entry: ControlNetEntry) -> ControlNet:
        if entry.sha256 not in self.loaded:
            from difflab.train.controlnet import load_controlnet

            self.loaded[entry.sha256] = load_controlnet(entry.path)[0]
        return self.loaded[entry.sha256]


class ControlNetUnitArgs(BaseModel):
    """One unit of alwayson_scripts.controlnet.args (the extension's ControlNetUnit)."""

    model_config = ConfigDict(extra="allow")

    enabled: bool = True
    image: str | dict[str, Any] | None = Field(None, description="base64 image (or {\"image\": base64})")
    input_image: str | None = Field(None, description="older clients' name for image")
    module: str = Field("none", description=f"the preprocessor: {', '.join(MODULES)}")
    model: str = Field("None", description="a title from GET /controlnet/model_list")
    weight: float = Field(1.0, ge=0, le=2, description="the control scale (the extension's slider: 0..2)")
    resize_mode: str | int = "Crop and Resize"
    guidance_start: float = Field(0.0, ge=0, le=1)
    guidance_end: float = Field(1.0, ge=0, le=1)
    control_mode: str | int = "Balanced"
    pixel_perfect: bool = False
    processor_res: int = -1
    threshold_a: float = -1
    threshold_b: float = -1
    low_vram: bool = False


def decode_image(encoded: Any, field: str) -> Image.Image:
    """A base64 image (a data: URI is fine), or the extension's {"image": base64, "mask": ...}."""
    if isinstance(encoded, dict):
        encoded = encoded.get("image")
    if not isinstance(encoded, str) or not encoded.strip():
        raise RequestError(field, f"{field} must be a base64-encoded image")
    text = encoded.strip()
    data = text.split(",", 1)[-1] if text.startswith("data:image/") else text
    try:
        image = Image.open(io.BytesIO(base64.b64decode(data, validate=True)))
        image.load()
    except (binascii.Error, ValueError, UnidentifiedImageError, OSError):
        raise RequestError(field, f"{field} must be a base64-encoded image (PNG, JPEG, or a data:image/ URI)") from None
    return image


def choice(value: str | int, options: dict[str, str] | tuple[str, ...], field: str,
           aliases: dict[str, str] | None = None):
    """An enum field given by its value or its index in the extension's order."""
    names = list(options)
    if isinstance(value, int) and not isinstance(value, bool):
        if 0 <= value < len(names):
            return names[value]
        if value == 3 and options is RESIZE_MODES:
            return "Just Resize"  # the extension's 'Just Resize (Latent upscale)'
    elif isinstance(value, str) and (aliases or {}).get(value, value) in names:
        return (aliases or {}).get(value, value)
    raise RequestError(field, f"{field} must be one of {', '.join(map(repr, names))} (or 0..{len(names) - 1}); "
                              f"got {value!r}")


def script_args(body) -> list[Any] | None:
    """The raw units of a body's alwayson_scripts.controlnet, or None when it has none."""
    scripts = (body.model_extra or {}).get("alwayson_scripts") or {}
    script = scripts.get(SCRIPT) if isinstance(scripts, dict) else None
    if script is None:
        return None
    if not isinstance(script, dict) or not isinstance(script.get("args", []), list):
        raise RequestError(f"alwayson_scripts.{SCRIPT}", f"alwayson_scripts.{SCRIPT} must be "
                                                         "{\"args\": [unit, ...]}")
    return script.get("args", [])


def other_scripts(scripts: Any) -> Any:
    """A body's alwayson_scripts less the ControlNet's (which is used, not ignored)."""
    return {k: v for k, v in scripts.items() if k != SCRIPT} if isinstance(scripts, dict) else scripts


def controls_of(body, shape: tuple[int, ...], model, catalog: ControlNetCatalog | None
                ) -> tuple[tuple[ControlUnit, ...], list[str]]:
    """The ControlUnits of a txt2img body for a served model making samples of `shape`, and warnings."""
    raw = script_args(body)
    if not raw:
        return (), []
    if tuple(shape) != tuple(model.config.data_shape):
        raise RequestError("difflab_size_by", "difflab_size_by model cannot take ControlNet units: their maps are "
                                              "made at the model's own size; resize by hr_upscaler instead")
    if getattr(body, "enable_hr", False):
        raise RequestError("enable_hr", "enable_hr cannot take ControlNet units yet: the second pass runs at another "
                                        "size than the control maps")
    base = model.denoiser.net
    units, warnings = [], []
    for i, unit in enumerate(raw):
        prefix = f"alwayson_scripts.{SCRIPT}.args[{i}]"
        try:
            args = ControlNetUnitArgs.model_validate(unit)
        except ValidationError as err:
            error = err.errors()[0]
            where = ".".join([prefix, *map(str, error["loc"])])
            raise RequestError(where, f"{where}: {error['msg']}, got {error.get('input')!r:.40}") from None
        if not args.enabled:
            continue
        if args.module not in MODULES:
            raise RequestError(f"{prefix}.module", f"{prefix}.module must be one of {', '.join(MODULES)} (GET "
                                                   f"/controlnet/module_list); got {args.module!r}")
        if catalog is None:
            raise RequestError(f"{prefix}.model", "this server has no ControlNets: start it with --controlnet-dir DIR")
        entry = catalog.find(args.model, f"{prefix}.model")
        net = catalog.load(entry)
        try:
            check_fits(net, base, f"{prefix}.model")
        except DifflabError as err:
            raise RequestError(f"{prefix}.model", str(err)) from None
        if args.guidance_start > args.guidance_end:
            raise RequestError(f"{prefix}.guidance_start", f"{prefix}.guidance_start must be <= guidance_end, got "
                                                           f"{args.guidance_start} > {args.guidance_end}")
        mode = CONTROL_MODES[choice(args.control_mode, CONTROL_MODES, f"{prefix}.control_mode")]
        resize = choice(args.resize_mode, RESIZE_MODES, f"{prefix}.resize_mode", RESIZE_ALIASES)
        image = decode_image(args.image if args.image is not None else args.input_image, f"{prefix}.image")
        factor = 2**net.config.hint_downsample
        control = control_map(image, args.module, shape[-2] * factor, shape[-1] * factor, resize)
        units.append(ControlUnit(net, control, args.weight, args.guidance_start, args.guidance_end, mode, prefix))
        if args.module not in ("none", entry.control):
            warnings.append(f"{prefix}: module {args.module!r} differs from the {entry.control!r} maps model "
                            f"{entry.name} was trained on")
        extra = sorted(args.model_extra or {})
        warnings += [f"{prefix}.{name} ignored: difflab does not use it" for name in extra]
    if len({u.mode == "controlnet" for u in units}) > 1:
        raise RequestError(f"alwayson_scripts.{SCRIPT}.args", "\"ControlNet is more important\" leaves CFG's "
                           "unconditional half without control, so difflab cannot mix it with the other control modes "
                           "in one request")
    return tuple(units), warnings


def controlnet_routes(catalog: ControlNetCatalog, current) -> APIRouter:
    """The extension's routes; `current()` is the served model whose size /controlnet/detect annotates at."""
    router = APIRouter(tags=["controlnet"])

    @router.get("/controlnet/version")
    async def version() -> dict:
        return {"version": 2}

    @router.get("/controlnet/model_list")
    async def model_list(update: bool = True) -> dict:
        """The ControlNets: "name [sha256 prefix]" as the extension lists its models."""
        if update:
            catalog.refresh()
        return {"model_list": [entry.title for entry in catalog.entries]}

    @router.get("/controlnet/module_list")
    async def module_list(alias_names: bool = False) -> dict:
        """The preprocessors (difflab's annotators); none passes the image through as the map."""
        detail = {"none": {"model_free": True, "sliders": [], "description": "the image is the control map"}}
        detail.update({name: {"model_free": True, "sliders": [], "description": a.description}
                       for name, a in ANNOTATORS.items()})
        return {"module_list": list(MODULES), "module_detail": detail}

    @router.get("/controlnet/settings")
    async def settings() -> dict:
        return {"control_net_unit_count": 3}

    @router.post("/controlnet/detect")
    async def detect(controlnet_module: str = Body("none"), controlnet_input_images: list[str] = Body([]),
                     controlnet_processor_res: int = Body(-1), controlnet_threshold_a: float = Body(-1),
                     controlnet_threshold_b: float = Body(-1), controlnet_masks: list[str] = Body([]),
                     low_vram: bool = Body(False)) -> dict:
        """Each input image's map by the module, at the current model's size, as base64 PNGs."""
        if controlnet_module not in MODULES:
            raise RequestError("controlnet_module", f"controlnet_module must be one of {', '.join(MODULES)}; got "
                                                    f"{controlnet_module!r}")
        if not controlnet_input_images:
            raise RequestError("controlnet_input_images", "controlnet_input_images must hold at least one image")
        model = current()
        maps = []
        for i, encoded in enumerate(controlnet_input_images):
            image = decode_image(encoded, f"controlnet_input_images[{i}]")
            control = control_map(image, controlnet_module, model.height, model.width, "Crop and Resize")
            maps.append(png_base64(to_uint8(control * 2 - 1)[0]))
        return {"images": maps, "info": "Success"}

    return router
