"""txt2img for the API: a body in the web UI's terms turned into the pipeline's Request and checked against the model
(plan_txt2img), then sampled and encoded (run_plan)."""

from __future__ import annotations

import json
import secrets
from dataclasses import dataclass
from typing import Any

import torch

from difflab.images import to_uint8
from difflab.pipelines.dialect import WEB_UI_NEUTRAL_CFG, Dialect, RequestError
from difflab.pipelines.guidance import GuidanceRequest
from difflab.pipelines.request import Plan, Request, plan_request
from difflab.pipelines.samplers import offered_samplers
from difflab.samplers.common import Interrupted
from difflab.serve.a1111 import infotext, png_base64, scheduler_grid
from difflab.serve.model import ServedModel
from difflab.serve.schemas import MAX_SEED, Txt2ImgRequest
from difflab.serve.worker import Job

# the web UI's names of the Request fields whose names differ (a class-only model's class is its prompt)
WEB_UI_NAMES = {"label": "prompt", "negative_label": "negative_prompt", "cfg": "cfg_scale", "sampler": "sampler_name",
                "grid": "scheduler"}


@dataclass(frozen=True)
class Txt2Img:
    """A body checked against the model: the pipeline's plan, and what the answer reports."""

    body: Txt2ImgRequest
    plan: Plan
    cfg_scale: float  # the UI's scale 1 + w (difflab.guidance)
    warnings: tuple[str, ...]

    @property
    def prompt(self) -> str:
        """As used: the class name on a class-only model, the text on a text model, "" when none or ignored."""
        return shown(self.plan.request.label, self.plan.request.prompt, self.plan.class_names)

    @property
    def negative_prompt(self) -> str:
        guidance = self.plan.request.guidance
        return shown(guidance.negative_label, guidance.negative_prompt, self.plan.class_names)

    def job(self) -> Job:
        return Job(self.body.n_iter, self.body.steps, self.body.batch_size)


def shown(label: int | None, prompt: str | None, class_names: tuple[str, ...] | None) -> str:
    return class_names[label] if label is not None else prompt or ""


def web_ui_dialect(model: ServedModel) -> Dialect:
    return Dialect(WEB_UI_NAMES, model=f"model {model.name}", web_ui=True)


def plan_txt2img(body: Txt2ImgRequest, model: ServedModel) -> Txt2Img:
    """Everything the model cannot honour is a RequestError naming the field; what it ignores becomes a warning."""
    for field, value, size in (("width", body.width, model.width), ("height", body.height, model.height)):
        if value is not None and value != size:
            raise RequestError(field, f"{field} must be {size}: model {model.name} makes {model.width}x{model.height} "
                                      f"images; got {value}")
    cfg_scale = WEB_UI_NEUTRAL_CFG if body.cfg_scale is None else body.cfg_scale
    if cfg_scale < WEB_UI_NEUTRAL_CFG and model.conditioning != "none":
        raise RequestError("cfg_scale", f"cfg_scale must lie in {WEB_UI_NEUTRAL_CFG:g}..30 on model {model.name} "
                                        f"(1 is no guidance; classifier-free guidance weight w = cfg_scale - 1); "
                                        f"got {cfg_scale:g}")
    label, prompt = prompt_fields(body.prompt, model, "prompt")
    negative_label, negative_prompt = prompt_fields(body.negative_prompt, model, "negative_prompt")
    guidance = GuidanceRequest(cfg=None if cfg_scale == WEB_UI_NEUTRAL_CFG else cfg_scale - WEB_UI_NEUTRAL_CFG,
                               negative_label=negative_label, negative_prompt=negative_prompt)
    request = Request(label=label, prompt=prompt, guidance=guidance,
                      sampler=body.sampler_name or body.sampler_index or offered_samplers()[0].name,
                      grid=scheduler_grid(body.scheduler), steps=body.steps, n=body.batch_size * body.n_iter,
                      seed=body.seed if body.seed != -1 else secrets.randbelow(MAX_SEED + 1), batch=body.batch_size)
    plan = plan_request(request, model.denoiser, model.config, web_ui_dialect(model))
    extra = [f"{field} ignored: {value!r} asks for something difflab does not do"
             for field, value in (body.model_extra or {}).items() if value not in (None, False, 0, "", [], {})]
    return Txt2Img(body, plan, cfg_scale, (*extra, *plan.warnings))


def prompt_fields(prompt: str, model: ServedModel, field: str) -> tuple[int | None, str | None]:
    """(label, prompt) of a prompt `field`: a class on a class-only model, else text (which the pipeline drops, with
    a warning, on an unconditional model)."""
    if model.conditioning == "class":
        return class_label(prompt, model, field), None
    return None, prompt.strip() or None


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


def run_plan(txt2img: Txt2Img, model: ServedModel, job: Job) -> dict[str, Any]:
    """Sample batch by batch (image i from seed + i) and answer as the UI does; an interrupt keeps the batches
    already finished."""
    body, plan = txt2img.body, txt2img.plan
    batches: list[torch.Tensor] = []
    try:
        for batch in plan.batches(callback=job.report):
            batches.append(batch)
    except Interrupted:
        pass
    images = to_uint8(torch.cat(batches)) if batches else []
    first_seed = plan.request.seed
    seeds = [first_seed + i for i in range(len(images))]
    prompt, negative_prompt = txt2img.prompt, txt2img.negative_prompt
    texts = [infotext(prompt=prompt, negative_prompt=negative_prompt, steps=body.steps, sampler=plan.sampler.name,
                      scheduler=body.scheduler, cfg_scale=txt2img.cfg_scale, seed=seed, width=model.width,
                      height=model.height, model_name=model.name, model_hash=model.short_hash)
             for seed in seeds]
    info = {
        "prompt": prompt, "all_prompts": [prompt] * len(seeds), "negative_prompt": negative_prompt,
        "seed": first_seed, "all_seeds": seeds, "width": model.width, "height": model.height,
        "sampler_name": plan.sampler.name, "cfg_scale": txt2img.cfg_scale, "steps": body.steps,
        "batch_size": body.batch_size, "n_iter": body.n_iter, "sd_model_name": model.name,
        "sd_model_hash": model.short_hash, "index_of_first_image": 0, "infotexts": texts,
        "class_label": plan.request.label, "difflab_sampler": plan.sampler.sampler, "grid": plan.sampler.grid,
        "interrupted": len(batches) < body.n_iter, "warnings": list(txt2img.warnings),
    }
    parameters = {**body.model_dump(), "seed": first_seed, "sampler_name": plan.sampler.name,
                  "cfg_scale": txt2img.cfg_scale, "width": model.width, "height": model.height}
    return {"images": [png_base64(image, text) for image, text in zip(images, texts)], "parameters": parameters,
            "info": json.dumps(info)}
