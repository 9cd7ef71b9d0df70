"""txt2img for the API: check a request against the model (plan), then sample and encode it (run_plan)."""

from __future__ import annotations

import json
import secrets
from dataclasses import dataclass
from typing import Any

import torch

from difflab.errors import DifflabError
from difflab.grids import GridKind, make_grid
from difflab.images import to_uint8
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
    prompt: str  # as used: "" when the model ignores it
    label: int | None  # class index on a class-conditional model; None samples unconditionally
    warnings: tuple[str, ...]

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
    if request.cfg_scale is not None and request.cfg_scale != NEUTRAL_CFG_SCALE:
        reason = ("has no condition to guide by" if model.class_names is None
                  else "is class-conditional, and difflab has no classifier-free guidance yet")
        raise RequestError("cfg_scale", f"cfg_scale must be {NEUTRAL_CFG_SCALE:g} (no guidance): model {model.name} "
                                        f"{reason}; got {request.cfg_scale:g}")
    warnings = [f"{field} ignored: {value!r} asks for something difflab does not do"
                for field, value in (request.model_extra or {}).items() if value not in (None, False, 0, "", [], {})]
    if model.class_names is None:
        warnings += [f"{field} ignored: model {model.name} is unconditional" for field in ("prompt", "negative_prompt")
                     if getattr(request, field).strip()]
        prompt, label = "", None
    else:
        if request.negative_prompt.strip():
            raise RequestError("negative_prompt", "negative_prompt needs classifier-free guidance, which difflab does "
                                                  "not have yet; leave it empty")
        label = class_label(request.prompt, model)
        prompt = "" if label is None else model.class_names[label]
    seed = request.seed if request.seed != -1 else secrets.randbelow(MAX_SEED + 1)
    return Plan(request, sampler, grid, seed, prompt, label, tuple(warnings))


def class_label(prompt: str, model: ServedModel) -> int | None:
    """A class-conditional model's prompt is one class name (any case) or index; empty samples unconditionally."""
    names = model.class_names
    text = prompt.strip()
    if not text:
        return None
    lowered = [name.lower() for name in names]
    if text.lower() in lowered:
        return lowered.index(text.lower())
    if text.isdigit() and int(text) < len(names):
        return int(text)
    raise RequestError("prompt", f"prompt must be one class of model {model.name} (a name or 0..{len(names) - 1}: "
                                 f"{', '.join(names)}) or empty; got {prompt!r}")


def run_plan(plan: Plan, model: ServedModel, job: Job) -> dict[str, Any]:
    """Sample the plan batch by batch (image i from seed + i) and answer as the UI does; an interrupt keeps the
    batches already finished."""
    request = plan.request
    batches: list[torch.Tensor] = []
    try:
        for k in range(request.n_iter):
            labels = None if plan.label is None else torch.full((request.batch_size,), plan.label, dtype=torch.long)
            batches.append(generate(
                model.denoiser, model.config.data_shape, request.batch_size, sampler=plan.sampler.sampler,
                steps=request.steps, grid=plan.grid, seed=plan.seed + k * request.batch_size,
                batch=request.batch_size, labels=labels, callback=lambda _, step, k=k: job.report(k, step)))
    except Interrupted:
        pass
    images = to_uint8(torch.cat(batches)) if batches else []
    seeds = [plan.seed + i for i in range(len(images))]
    texts = [infotext(prompt=plan.prompt, steps=request.steps, sampler=plan.sampler.name, scheduler=request.scheduler,
                      cfg_scale=NEUTRAL_CFG_SCALE, seed=seed, width=model.width, height=model.height,
                      model_name=model.name, model_hash=model.short_hash) for seed in seeds]
    info = {
        "prompt": plan.prompt, "all_prompts": [plan.prompt] * len(seeds), "negative_prompt": "",
        "seed": plan.seed, "all_seeds": seeds, "width": model.width, "height": model.height,
        "sampler_name": plan.sampler.name, "cfg_scale": NEUTRAL_CFG_SCALE, "steps": request.steps,
        "batch_size": request.batch_size, "n_iter": request.n_iter, "sd_model_name": model.name,
        "sd_model_hash": model.short_hash, "index_of_first_image": 0, "infotexts": texts,
        "class_label": plan.label, "difflab_sampler": plan.sampler.sampler, "grid": plan.grid,
        "interrupted": len(batches) < request.n_iter, "warnings": list(plan.warnings),
    }
    parameters = {**request.model_dump(), "seed": plan.seed, "sampler_name": plan.sampler.name,
                  "cfg_scale": NEUTRAL_CFG_SCALE, "width": model.width, "height": model.height}
    return {"images": [png_base64(image, text) for image, text in zip(images, texts)], "parameters": parameters,
            "info": json.dumps(info)}
