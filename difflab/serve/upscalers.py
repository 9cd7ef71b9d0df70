"""Super-resolution models as upscalers (`difflab serve --upscaler-dir DIR`): every checkpoint below DIR whose network
takes the upsampled low-resolution image (train.low_res, difflab.pipelines.cascade), listed by GET /sdapi/v1/upscalers
as the web UI lists its upscaler models and named by `hr_upscaler`: in txt2img's hires fix (enable_hr), and where
txt2img or img2img images are brought to another width x height. Each is loaded once, when first used."""

from __future__ import annotations

import json
import threading
from collections.abc import Callable
from dataclasses import dataclass, replace
from functools import partial
from pathlib import Path
from typing import Any

from difflab.denoiser import Denoiser
from difflab.errors import DifflabError
from difflab.model import load_model
from difflab.pipelines.cascade import SuperResolution, check_super_resolution, stage_request
from difflab.pipelines.dialect import Dialect, RequestError
from difflab.pipelines.request import Plan, Request, plan_request
from difflab.serve.controlnet import read_metadata
from difflab.serve.model import checkpoint_name
from difflab.train.checkpoint import config_from_dict
from difflab.train.config import ExperimentConfig

MODEL_NAME = "difflab super-resolution"  # the UpscalerItem model_name of these models (the UI's upscaler family)
NOISE_LEVEL_FIELD = "difflab_hr_noise_level"


@dataclass(frozen=True)
class UpscalerModel:
    """A super-resolution checkpoint: config.train.low_res x low_res images in, config.data_shape out."""

    name: str
    path: Path
    config: ExperimentConfig

    @property
    def low_shape(self) -> tuple[int, int, int]:
        return self.config.data_shape[0], self.config.train.low_res, self.config.train.low_res

    @property
    def scale(self) -> float:
        return self.config.data_shape[-1] / self.config.train.low_res

    def item(self) -> dict[str, Any]:
        """As the web UI's UpscalerItem (modules/api/models.py)."""
        return {"name": self.name, "model_name": MODEL_NAME, "model_path": str(self.path), "model_url": None,
                "scale": self.scale}

    def check_fits(self, low_shape: tuple[int, ...], target: tuple[int, int], noise_level: float) -> None:
        """An upscale from `low_shape` [C, h, w] samples to `target` (height, width) at augmentation `noise_level`,
        or a RequestError naming hr_upscaler (or the level's field)."""
        (height, width), (low_c, low_h, low_w) = self.config.data_shape[1:], self.low_shape
        if tuple(low_shape) != self.low_shape or tuple(target) != (height, width):
            raise RequestError("hr_upscaler", f"hr_upscaler {self.name} upscales {low_w}x{low_h} images ({low_c} "
                                              f"channel(s)) to {width}x{height}; this request upscales "
                                              f"{low_shape[2]}x{low_shape[1]} ({low_shape[0]} channel(s)) to "
                                              f"{target[1]}x{target[0]}: set the size to fit (hr_scale or "
                                              f"hr_resize_x/y with enable_hr, else width and height), or name "
                                              f"another upscaler")
        try:
            check_super_resolution(self.config, low_shape, noise_level)
        except DifflabError as err:
            raise RequestError(NOISE_LEVEL_FIELD, str(err).replace("--noise-level", NOISE_LEVEL_FIELD)) from None


def unused_noise_level() -> RequestError:
    return RequestError(NOISE_LEVEL_FIELD, f"{NOISE_LEVEL_FIELD} goes with an hr_upscaler that is a super-resolution "
                                           f"model (GET /sdapi/v1/upscalers)")


def scan(folder: Path) -> list[UpscalerModel]:
    """The super-resolution checkpoints below `folder`, named as --models-dir names checkpoints."""
    found = []
    for path in sorted(folder.rglob("*.safetensors")):
        try:
            metadata = read_metadata(path)
            if metadata.get("kind", "denoiser") != "denoiser":
                continue
            config = config_from_dict("denoiser", json.loads(metadata["config"]))
        except (OSError, ValueError, KeyError, TypeError, DifflabError):
            continue  # not a difflab checkpoint
        if "low_res" in config.network.accepts and config.train.low_res is not None:
            found.append(UpscalerModel(checkpoint_name(path, folder), path.resolve(), config))
    return found


class UpscalerCatalog:
    def __init__(self, folder: Path | None = None):
        self.models = scan(folder) if folder is not None else []
        self._denoisers: dict[Path, Denoiser] = {}
        self._lock = threading.Lock()

    def find(self, name: str) -> UpscalerModel | None:
        """The model a name spells (in any case), None if none does."""
        return next((model for model in self.models if model.name.lower() == name.lower()), None)

    def denoiser(self, model: UpscalerModel) -> Denoiser:
        with self._lock:
            if model.path not in self._denoisers:
                self._denoisers[model.path] = load_model(model.path).denoiser
            return self._denoisers[model.path]

    def stage(self, model: UpscalerModel, request: Request, noise_level: float, dialect: Dialect) -> SuperResolution:
        """The super-resolution stage upscaling the samples `request` asks for (its n, seeds, sampler and steps; its
        class or text where the model takes them), as the CLI's --hires-upscaler FILE runs it."""
        return SuperResolution(plan_request(stage_request(request, model.config), self.denoiser(model), model.config,
                                            dialect), model.config, noise_level)

    def upscaler(self, model: UpscalerModel, plan: Plan, low_shape: tuple[int, ...], target: tuple[int, int],
                 noise_level: float, dialect: Dialect) -> Callable[[Request], SuperResolution]:
        """A batch's request -> the stage upscaling the `low_shape` samples of `plan`'s batches to `target`, checked
        now: what it cannot honour is a RequestError naming its field."""
        model.check_fits(low_shape, target, noise_level)
        upscaler = partial(self.stage, model, noise_level=noise_level,
                           dialect=replace(dialect, model=f"hr_upscaler {model.name}"))
        upscaler(plan.request)
        return upscaler
