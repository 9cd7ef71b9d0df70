"""txt2img for the API: a body in the web UI's terms turned into the pipeline's Request and checked against the model
(plan_txt2img), then sampled batch by batch, resized (or upscaled by a super-resolution model) and encoded
(run_plan)."""

from __future__ import annotations

import json
import secrets
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np
import torch

from difflab.images import to_uint8
from difflab.pipelines.cascade import SuperResolution
from difflab.pipelines.dialect import WEB_UI_NEUTRAL_CFG, Dialect, RequestError
from difflab.pipelines.guidance import GuidanceRequest
from difflab.pipelines.request import Plan, Request, plan_request
from difflab.samplers.common import Interrupted
from difflab.serve.a1111 import infotext, png_base64
from difflab.serve.controlnet import ControlNetCatalog, controls_of, other_scripts
from difflab.serve.model import ServedModel
from difflab.serve.names import resolve_names, schedule_type
from difflab.serve.options import option_fields, options_of
from difflab.serve.prompts import prompt_fields
from difflab.serve.resize import model_shape_at, resize
from difflab.serve.schemas import IGNORED_FIELDS, MAX_SEED, Txt2ImgRequest
from difflab.serve.settings import SAMPLER_SETTINGS, request_settings, settings_run
from difflab.serve.stages import Stages
from difflab.serve.upscalers import UpscalerCatalog, unused_noise_level
from difflab.serve.worker import Job

# the web UI's names of the Request fields whose names differ (a class-only model's class is its prompt)
WEB_UI_NAMES = {"label": "prompt", "negative_label": "negative_prompt", "cfg": "cfg_scale", "sampler": "sampler_name",
                "grid": "scheduler"}
# The default guidance weight w on a conditional model (cfg_scale = 1 + w), from the README's trade-off on the bundled
# conditional model (bench/guidance_tradeoff.py, DDIM 20 steps): w = 0 puts 86.0 % of samples in the requested class
# (FD 1.8), w = 1 97.8 % (FD 3.2), w = 2 99.0 % (FD 5.0). w = 1 buys most of the accuracy for the least FD.
DEFAULT_GUIDANCE_WEIGHT = 1.0
MODEL_SETTING = "sd_model_checkpoint"
NOT_THE_UIS = object()  # the default of a field the web UI does not have


@dataclass(frozen=True)
class Txt2Img:
    """A body checked against the model: the pipeline's plan, and what the answer reports."""

    body: Txt2ImgRequest
    model: ServedModel
    plan: Plan
    dialect: Dialect
    cfg_scale: float  # the UI's scale 1 + w (difflab.guidance)
    width: int  # of the images answered: the model's, unless the request asked for another (see size_by)
    height: int
    upscaler: str | None
    schedule_type: str | None  # the UI's "Schedule type" (difflab.serve.names.schedule_type)
    size_by: str | None  # how another size than the model's was made: "upscaler", "model", or None (the model's)
    warnings: tuple[str, ...]
    stages: Stages | None = None  # the hires fix and a refiner (difflab.serve.stages)
    settings: Mapping[str, Any] = field(default_factory=dict)  # the UI's sampler settings it runs under
    setting_fields: tuple[tuple[str, Any], ...] = ()  # the infotext entries of those settings beyond the options'
    # an hr_upscaler that is a super-resolution model (difflab.serve.upscalers): a batch's request -> its stage, and
    # its augmentation level
    super_resolution: Callable[[Request], SuperResolution] | None = None
    noise_level: float | None = None

    @property
    def prompt(self) -> str:
        """As used: the class name on a class-only model, the text on a text model, "" when none or ignored."""
        return shown(self.plan.request.label, self.plan.request.prompt, self.plan.class_names)

    @property
    def negative_prompt(self) -> str:
        guidance = self.plan.request.guidance
        return shown(guidance.negative_label, guidance.negative_prompt, self.plan.class_names)

    @property
    def edit_fields(self) -> dict[str, Any]:
        """The infotext fields an edit adds after the model's (img2img's denoising strength, mask blur); txt2img's
        stages' (hires fix, refiner)."""
        return {} if self.stages is None else self.stages.infotext()

    def job(self) -> Job:
        return Job(self.body.n_iter, self.body.steps, self.body.batch_size, self.body.force_task_id)

    def part_request(self, index: int) -> Request:
        """The request of batch `index` alone: its images keep their seeds."""
        request, size = self.plan.request, self.body.batch_size
        return replace(request, n=size, seed=request.seed + index * size)

    def part(self, index: int) -> Plan:
        """The plan of batch `index` alone, so a skipped batch leaves the rest."""
        part = plan_request(self.part_request(index), self.model.denoiser, self.model.config, self.dialect,
                            decode=self.model.decode)
        return replace(part, shape=self.plan.shape)


def shown(label: int | None, prompt: str | None, class_names: tuple[str, ...] | None) -> str:
    return class_names[label] if label is not None else prompt or ""


def web_ui_dialect(model: ServedModel) -> Dialect:
    return Dialect(WEB_UI_NAMES, model=f"model {model.name}", web_ui=True)


def default_cfg_scale(model: ServedModel) -> float:
    return WEB_UI_NEUTRAL_CFG + (DEFAULT_GUIDANCE_WEIGHT if model.conditioning != "none" else 0.0)


def plan_txt2img(body: Txt2ImgRequest, model: ServedModel, strict_names: bool = False,
                 controlnets: ControlNetCatalog | None = None, upscalers: UpscalerCatalog | None = None,
                 settings: Mapping[str, Any] | None = None, precision: str = "fp32") -> Txt2Img:
    """Everything the model cannot honour is a RequestError naming the field; what it ignores becomes a warning.
    Another width x height is made by hr_upscaler: a resize method, or one of the super-resolution `upscalers`.
    `settings`: the server's sampler settings (difflab.serve.settings), under the body's override_settings;
    `precision`: the server's network precision (`difflab serve --precision`)."""
    dialect = web_ui_dialect(model)
    settings = request_settings(body.override_settings, settings or {})
    width, height = body.width or model.width, body.height or model.height
    other_size = (width, height) != (model.width, model.height)
    by_model = other_size and body.difflab_size_by == "model"
    if by_model and model.decode is not None:
        raise RequestError("difflab_size_by", f"difflab_size_by model runs a pixel U-Net at another size; model "
                                              f"{model.name} samples latents, so another size is made by hr_upscaler")
    shape = model_shape_at(model.config, width, height, model.name) if by_model else tuple(model.config.data_shape)
    resizing, upscalers = other_size and not by_model, upscalers or UpscalerCatalog()
    sr = upscalers.find(body.hr_upscaler) if resizing and body.hr_upscaler and not body.enable_hr else None
    if sr is None and body.difflab_hr_noise_level is not None and not body.enable_hr:
        raise unused_noise_level()
    names = resolve_names(body.sampler_name or body.sampler_index, body.scheduler, body.hr_upscaler,
                          resizing and sr is None, dialect, strict_names)
    cfg_scale = default_cfg_scale(model) if body.cfg_scale is None else body.cfg_scale
    unguided = []  # the UI's clients always send a cfg_scale (7 by default), as they send a prompt
    if model.conditioning == "none" and cfg_scale != WEB_UI_NEUTRAL_CFG:
        unguided = [f"cfg_scale ignored: model {model.name} is unconditional, so nothing is guided (cfg_scale 1)"]
        cfg_scale = WEB_UI_NEUTRAL_CFG
    if cfg_scale < WEB_UI_NEUTRAL_CFG:
        raise RequestError("cfg_scale", f"cfg_scale must lie in {WEB_UI_NEUTRAL_CFG:g}..30 on model {model.name} "
                                        f"(1 is no guidance; classifier-free guidance weight w = cfg_scale - 1); "
                                        f"got {cfg_scale:g}")
    label, prompt = prompt_fields(body.prompt, model, "prompt")
    negative_label, negative_prompt = prompt_fields(body.negative_prompt, model, "negative_prompt")
    guidance = GuidanceRequest(cfg=None if cfg_scale == WEB_UI_NEUTRAL_CFG else cfg_scale - WEB_UI_NEUTRAL_CFG,
                               negative_label=negative_label, negative_prompt=negative_prompt)
    run = settings_run(names.sampler, settings, names.grid is not None)
    options, dropped = options_of(body, names.sampler, dialect, run.options)
    request = Request(label=label, prompt=prompt, guidance=guidance, sampler=names.sampler.name,
                      grid=names.grid or run.grid,
                      options=options, steps=body.steps, n=body.batch_size * body.n_iter,
                      seed=body.seed if body.seed != -1 else secrets.randbelow(MAX_SEED + 1), batch=body.batch_size,
                      precision=precision)
    controls, control_warnings = controls_of(body, shape, model, controlnets)  # alwayson_scripts.controlnet
    request = replace(request, controls=controls)
    plan = replace(plan_request(request, model.denoiser, model.config, dialect, decode=model.decode), shape=shape)
    size_by = "model" if by_model else "upscaler" if other_size else None
    super_resolution = noise_level = None
    if sr is not None:
        noise_level = body.difflab_hr_noise_level or 0.0
        super_resolution = upscalers.upscaler(sr, plan, model.shape, (height, width), noise_level, dialect)
    return Txt2Img(body, model, plan, dialect, cfg_scale, width, height, names.upscaler if sr is None else sr.name,
                   schedule_type(names.sampler if run.grid else plan.sampler, names.scheduler), size_by,
                   (*ignored_fields(body), *names.warnings, *run.warnings, *dropped, *unguided, *plan.warnings,
                    *control_warnings),
                   super_resolution=super_resolution, noise_level=noise_level, settings=settings,
                   setting_fields=run.infotext)


def ignored_fields(body: Txt2ImgRequest) -> list[str]:
    """A warning for each field (and override setting) that asks for something difflab does not do."""
    extra = body.model_extra or {}
    asked = {**extra, "alwayson_scripts": other_scripts(extra.get("alwayson_scripts")),  # a ControlNet is used
             **{f"override_settings.{key}": value for key, value in (body.override_settings or {}).items()
                if key != MODEL_SETTING and key not in SAMPLER_SETTINGS}}
    return [f"{field} ignored: {value!r} asks for something difflab does not do" for field, value in asked.items()
            if value not in (None, False, 0, "", [], {}) and value != IGNORED_FIELDS.get(field, NOT_THE_UIS)]


def run_plan(txt2img: Txt2Img, job: Job) -> dict[str, Any]:
    """Sample batch by batch (image i from seed + i), resize to the size asked for, and answer as the UI does. An
    interrupt keeps the batches already finished; a skip drops the running batch and goes on with the next (the UI
    keeps a skipped batch's unfinished images; difflab, as for an interrupt, does not)."""
    body, plan, model = txt2img.body, txt2img.plan, txt2img.model
    batches: list[torch.Tensor] = []
    seeds: list[int] = []
    for index in range(body.n_iter):
        job.skipped = False  # a skip asked for between batches is dropped, as in the UI
        try:
            part, report = txt2img.part(index), lambda _, step, index=index: job.report(index, step)
            done = (part.batches(callback=report) if txt2img.stages is None
                    else txt2img.stages.batches(part, model.config, report))
            if txt2img.super_resolution is not None:  # hr_upscaler is a super-resolution model
                stage = txt2img.super_resolution(txt2img.part_request(index))
                done = (stage.run(batch) for batch in done)
            batches.extend(done)
            seeds.extend(range(plan.request.seed + index * body.batch_size,
                               plan.request.seed + (index + 1) * body.batch_size))
        except Interrupted:
            if job.interrupted:
                break
    images = to_uint8(torch.cat(batches)) if batches else np.zeros((0, *plan.shape[1:]), np.uint8)
    if txt2img.upscaler is not None and txt2img.super_resolution is None:
        images = resize(images, txt2img.width, txt2img.height, txt2img.upscaler)
    prompt, negative_prompt = txt2img.prompt, txt2img.negative_prompt
    trained = f"{model.width}x{model.height}"
    resized = {"upscaler": {"Upscaled from": trained, "Upscaler": txt2img.upscaler,
                            "Upscaler noise level": txt2img.noise_level or None},
               "model": {"Trained size": trained}, None: {}}[txt2img.size_by]
    texts = [infotext(prompt, negative_prompt, {
        "Steps": body.steps, "Sampler": plan.sampler.name, "Schedule type": txt2img.schedule_type,
        "CFG scale": f"{txt2img.cfg_scale:g}", **option_fields(plan.sampler, plan.options),
        **dict(txt2img.setting_fields),
        "Seed": seed, "Size": f"{txt2img.width}x{txt2img.height}", **resized, "Model hash": model.short_hash,
        "Model": model.name, **txt2img.edit_fields}) for seed in seeds]
    info = {
        "prompt": prompt, "all_prompts": [prompt] * len(seeds), "negative_prompt": negative_prompt,
        "seed": plan.request.seed, "all_seeds": seeds, "width": txt2img.width, "height": txt2img.height,
        "sampler_name": plan.sampler.name, "scheduler": txt2img.schedule_type or "Automatic",
        "cfg_scale": txt2img.cfg_scale, "steps": body.steps, "batch_size": body.batch_size, "n_iter": body.n_iter,
        "sd_model_name": model.name, "sd_model_hash": model.short_hash, "index_of_first_image": 0,
        "infotexts": texts, "class_label": plan.request.label, "difflab_sampler": plan.sampler.sampler,
        "grid": plan.sampler.grid, "sampler_options": plan.options, "native_width": model.width,
        "native_height": model.height, "size_by": txt2img.size_by, "upscaler": txt2img.upscaler, "task_id": job.task,
        "interrupted": job.interrupted, "warnings": list(txt2img.warnings),
        # per batch, from a ParaDiGMS sampler: its sequential network calls and evaluations per image
        "difflab_parallel": [{"rounds": rounds, "evaluations": nfe}
                             for _, (rounds, nfe) in sorted(job.parallel.items())] or None,
    }
    parameters = {**body.model_dump(), "seed": plan.request.seed, "sampler_name": plan.sampler.name,
                  "cfg_scale": txt2img.cfg_scale, "width": txt2img.width, "height": txt2img.height}
    encoded = [png_base64(image, text) for image, text in zip(images, texts)] if body.send_images else []
    return {"images": encoded, "parameters": parameters, "info": json.dumps(info)}
