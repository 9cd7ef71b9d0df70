"""txt2img for the API: check a request against the model (plan), then sample and encode it (run_plan)."""

from __future__ import annotations

import json
import secrets
from dataclasses import dataclass
from typing import Any

import torch

from difflab.conditioning import Condition
from difflab.errors import DifflabError
from difflab.grids import GridKind, make_grid
from difflab.guidance import Guidance
from difflab.images import to_uint8
from difflab.pipelines.conditions import accepts_text, request_condition
from difflab.pipelines.generate import generate
from difflab.samplers.common import Interrupted
from difflab.serve.a1111 import SamplerName, infotext, png_base64, resolve_sampler
from difflab.serve.model import ServedModel
from difflab.serve.schemas import MAX_SEED, RequestError, Txt2ImgRequest
from difflab.serve.worker import Job

NEUTRAL_CFG_SCALE = 1.0


@dataclass(frozen=True)
class Plan:
    """A request checked against the model, with its seed drawn and its prompt resolved."""

    request: Txt2ImgRequest
    sampler: SamplerName
    grid: GridKind
    seed: int
    prompt: str  # as used: "" when the model ignores it; free text on a text-conditional model
    label: int | None  # class index on a class-only model; None samples unconditionally (or from the prompt text)
    warnings: tuple[str, ...]
    cfg_scale: float = NEUTRAL_CFG_SCALE  # the UI's scale 1 + w (difflab.guidance)
    negative_prompt: str = ""  # as used: "" when there is none or it has no effect
    negative_label: int | None = None  # the class CFG guides away from instead of the null label

    def condition(self, model: ServedModel) -> Condition | None:
        """One row: the class label, or the prompt's text on a model that takes text; None: unconditional."""
        text = self.prompt if accepts_text(model.config) else None
        return request_condition(model.config, label=self.label, prompt=text)

    def guidance(self, model: ServedModel) -> Guidance | None:
        """Classifier-free guidance with w = cfg_scale - 1 (None at cfg_scale 1); the negative prompt (text or
        class) replaces the null condition."""
        if self.cfg_scale == NEUTRAL_CFG_SCALE:
            return None
        text = self.negative_prompt if accepts_text(model.config) else None
        negative = request_condition(model.config, label=self.negative_label, prompt=text)
        return Guidance(cfg=self.cfg_scale - NEUTRAL_CFG_SCALE, negative=negative)

    def job(self) -> Job:
        return Job(self.request.n_iter, self.request.steps, self.request.batch_size)


def plan_txt2img(request: Txt2ImgRequest, model: ServedModel) -> Plan:
    """Everything the model cannot honour is a RequestError naming the field; what it ignores becomes a warning."""
    sampler, grid = resolve_sampler(request.sampler_name or request.sampler_index, request.scheduler)
    for field, value, size in (("width", request.width, model.width), ("height", request.height, model.height)):
        if value is not None and value != size:
            raise RequestError(field, f"{field} must be {size}: model {model.name} makes {model.width}x{model.height} "
                                      f"images; got {value}")
    try:
        make_grid(model.denoiser.schedule, request.steps, grid)
    except DifflabError as err:
        raise RequestError("steps", str(err)) from None
    cfg_scale = NEUTRAL_CFG_SCALE if request.cfg_scale is None else request.cfg_scale
    warnings = [f"{field} ignored: {value!r} asks for something difflab does not do"
                for field, value in (request.model_extra or {}).items() if value not in (None, False, 0, "", [], {})]
    if model.conditioning == "none":
        if cfg_scale != NEUTRAL_CFG_SCALE:
            raise RequestError("cfg_scale", f"cfg_scale must be {NEUTRAL_CFG_SCALE:g} (no guidance): model "
                                            f"{model.name} has no condition to guide by; got {cfg_scale:g}")
        warnings += [f"{field} ignored: model {model.name} is unconditional" for field in ("prompt", "negative_prompt")
                     if getattr(request, field).strip()]
        prompt, label, negative, negative_label = "", None, "", None
    else:
        if cfg_scale < NEUTRAL_CFG_SCALE:
            raise RequestError("cfg_scale", f"cfg_scale must lie in {NEUTRAL_CFG_SCALE:g}..30 on model {model.name} "
                                            f"(1 is no guidance; classifier-free guidance weight w = cfg_scale - 1); "
                                            f"got {cfg_scale:g}")
        if accepts_text(model.config):  # free text, encoded by the frozen text encoder
            label, negative_label = None, None
            prompt, negative = request.prompt.strip(), request.negative_prompt.strip()
        else:
            label = class_label(request.prompt, model, "prompt")
            negative_label = class_label(request.negative_prompt, model, "negative_prompt")
            prompt = "" if label is None else model.class_names[label]
            negative = "" if negative_label is None else model.class_names[negative_label]
        if negative and cfg_scale == NEUTRAL_CFG_SCALE:
            warnings.append("negative_prompt ignored: it acts only through guidance, with cfg_scale > 1")
            negative, negative_label = "", None
    seed = request.seed if request.seed != -1 else secrets.randbelow(MAX_SEED + 1)
    return Plan(request, sampler, grid, seed, prompt, label, tuple(warnings), cfg_scale, negative, negative_label)


def class_label(prompt: str, model: ServedModel, field: str) -> int | None:
    """A class-conditional model's prompt (or negative prompt, `field`) is one class name (any case) or index;
    empty means none: an unconditional sample (or CFG's null label)."""
    names = model.class_names
    text = prompt.strip()
    if not text:
        return None
    lowered = [name.lower() for name in names]
    if text.lower() in lowered:
        return lowered.index(text.lower())
    if text.isdigit() and int(text) < len(names):
        return int(text)
    raise RequestError(field, f"{field} must be one class of model {model.name} (a name or 0..{len(names) - 1}: "
                              f"{', '.join(names)}) or empty; got {prompt!r}")


def run_plan(plan: Plan, model: ServedModel, job: Job) -> dict[str, Any]:
    """Sample the plan batch by batch (image i from seed + i) and answer as the UI does; an interrupt keeps the
    batches already finished."""
    request = plan.request
    batches: list[torch.Tensor] = []
    row, guidance = plan.condition(model), plan.guidance(model)
    cond = None if row is None else row.repeat(request.batch_size)
    try:
        for k in range(request.n_iter):
            batches.append(generate(
                model.denoiser, model.config.data_shape, request.batch_size, sampler=plan.sampler.sampler,
                steps=request.steps, grid=plan.grid, seed=plan.seed + k * request.batch_size,
                batch=request.batch_size, cond=cond, guidance=guidance,
                callback=lambda _, step, k=k: job.report(k, step)))
    except Interrupted:
        pass
    images = to_uint8(torch.cat(batches)) if batches else []
    seeds = [plan.seed + i for i in range(len(images))]
    texts = [infotext(prompt=plan.prompt, negative_prompt=plan.negative_prompt, steps=request.steps,
                      sampler=plan.sampler.name, scheduler=request.scheduler, cfg_scale=plan.cfg_scale, seed=seed,
                      width=model.width, height=model.height, model_name=model.name, model_hash=model.short_hash)
             for seed in seeds]
    info = {
        "prompt": plan.prompt, "all_prompts": [plan.prompt] * len(seeds), "negative_prompt": plan.negative_prompt,
        "seed": plan.seed, "all_seeds": seeds, "width": model.width, "height": model.height,
        "sampler_name": plan.sampler.name, "cfg_scale": plan.cfg_scale, "steps": request.steps,
        "batch_size": request.batch_size, "n_iter": request.n_iter, "sd_model_name": model.name,
        "sd_model_hash": model.short_hash, "index_of_first_image": 0, "infotexts": texts,
        "class_label": plan.label, "difflab_sampler": plan.sampler.sampler, "grid": plan.grid,
        "interrupted": len(batches) < request.n_iter, "warnings": list(plan.warnings),
    }
    parameters = {**request.model_dump(), "seed": plan.seed, "sampler_name": plan.sampler.name,
                  "cfg_scale": plan.cfg_scale, "width": model.width, "height": model.height}
    return {"images": [png_base64(image, text) for image, text in zip(images, texts)], "parameters": parameters,
            "info": json.dumps(info)}
