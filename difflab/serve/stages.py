"""txt2img's multi-stage fields on the server: the hires fix (enable_hr, hr_scale, hr_resize_x/y,
hr_second_pass_steps, hr_upscaler: interpolation or a super-resolution model of difflab.serve.upscalers,
denoising_strength, hr_checkpoint_name) and the refiner (refiner_checkpoint, refiner_switch_at),
checked when a request is planned and run batch by batch on the pipelines' stages (difflab.pipelines.hires,
difflab.pipelines.refiner)."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field, replace
from typing import Any

import torch

from difflab.errors import DifflabError
from difflab.pipelines.cascade import SuperResolution
from difflab.pipelines.dialect import RequestError
from difflab.pipelines.hires import MODEL_UPSCALER, Hires, check_second_model, hires_size, plan_hires, run_hires
from difflab.pipelines.refiner import Refined, check_refiner
from difflab.pipelines.request import Plan, Request
from difflab.samplers.common import StepInfo
from difflab.serve.adapters import parse_prompt
from difflab.serve.model import ServedModel
from difflab.serve.names import resolve_names, schedule_type
from difflab.serve.options import options_of
from difflab.serve.settings import settings_run
from difflab.serve.prompts import prompt_fields
from difflab.serve.upscalers import UpscalerCatalog, unused_noise_level

# The UI's latent upscalers (modules/shared.py latent_upscale_modes, in its order; GET latent-upscale-modes) -> the
# interpolation of the latents (torch interpolate's mode and antialias); its default is "Latent". A pixel model's
# samples are its latents.
LATENT_UPSCALE_MODES = {"Latent": "bilinear", "Latent (antialiased)": "bilinear-antialiased",
                        "Latent (bicubic)": "bicubic", "Latent (bicubic antialiased)": "bicubic-antialiased",
                        "Latent (nearest)": "nearest", "Latent (nearest-exact)": "nearest-exact"}
# hr_upscaler names the hires fix takes -> interpolation mode: the latent modes and two resize methods
HIRES_UPSCALERS = {**LATENT_UPSCALE_MODES, "Nearest": "nearest", "Bilinear": "bilinear"}
DEFAULT_HIRES_UPSCALER = "Latent"
DEFAULT_SWITCH_AT = 0.8  # the UI's refiner switch slider default
# the UI's hires choices that mean the first pass's
SAME_SAMPLER, SAME_SCHEDULER, SAME_CHECKPOINT = "Use same sampler", "Use same scheduler", "Use same checkpoint"


@dataclass(frozen=True)
class Stages:
    """What a txt2img body asks for beyond one pass: the hires fix and/or a refiner."""

    hires: Hires | None
    hires_upscaler: str | None  # the name as asked (a super-resolution model: as listed)
    refiner: ServedModel | None
    switch_at: float | None
    super_resolution: Callable[[Request], SuperResolution] | None = None  # a batch's request -> its SR stage
    noise_level: float | None = None  # the super-resolution upscaler's augmentation level
    # the UI's infotext of the second pass (Hires checkpoint; Hires sampler, prompt, negative prompt, schedule type,
    # where they differ)
    hires_text: Mapping[str, Any] = field(default_factory=dict)
    hires_model: ServedModel | None = None  # hr_checkpoint_name's model for the second pass; None: the first pass's

    def plan(self, plan: Plan) -> Plan:
        """The one-pass plan with its denoiser handing over to the refiner."""
        if self.refiner is None:
            return plan
        return replace(plan, denoiser=Refined(plan.denoiser, self.refiner.denoiser, self.switch_at))

    def batches(self, plan: Plan, config, callback: Callable[[int, StepInfo], None]) -> Iterator[torch.Tensor]:
        plan = self.plan(plan)
        if self.hires is None:
            return plan.batches(callback=callback)
        upscaler = None if self.super_resolution is None else self.super_resolution(plan.request)
        model = None if self.hires_model is None else (self.hires_model.denoiser, self.hires_model.config)
        return iter([run_hires(plan, config, self.hires, upscaler=upscaler, model=model).samples])

    def infotext(self) -> dict[str, Any]:
        """The UI's extra generation parameters for these stages."""
        text: dict[str, Any] = {}
        if self.hires is not None:
            text["Denoising strength"] = self.hires.strength
            text.update(self.hires_text)  # the UI's order (StableDiffusionProcessingTxt2Img.init)
            if self.hires.resize_x or self.hires.resize_y:
                text["Hires resize"] = f"{self.hires.resize_x}x{self.hires.resize_y}"
            else:
                text["Hires upscale"] = f"{self.hires.scale:g}"
            text["Hires steps"] = self.hires.steps or None
            text["Hires upscaler"] = self.hires_upscaler
            text["Hires noise level"] = self.noise_level or None  # difflab's: a super-resolution upscaler's level
        if self.refiner is not None:
            text["Refiner"] = self.refiner.name
            text["Refiner switch at"] = self.switch_at
        return text


@dataclass(frozen=True)
class SecondPass:
    """The hires fields of a body for its second pass: Hires' sampler, grid, options and condition, the UI's infotext
    where they differ from the first pass's, and warnings."""

    hires: dict[str, Any]
    text: dict[str, Any]
    warnings: tuple[str, ...]


def second_pass(txt2img, strict: bool) -> SecondPass:
    """hr_sampler_name and hr_scheduler resolved as sampler_name and scheduler are, hr_prompt and hr_negative_prompt
    as prompt and negative_prompt are (null, "Use same ..." or "": the first pass's, as the UI's processing copies
    them)."""
    sampler, sampler_text, sampler_warnings = hires_sampler_fields(txt2img, strict)
    condition, condition_text, condition_warnings = hires_condition_fields(txt2img)
    text = {"Hires sampler": sampler_text.get("Hires sampler"), **condition_text,
            "Hires schedule type": sampler_text.get("Hires schedule type")}
    return SecondPass({**sampler, **condition}, {k: v for k, v in text.items() if v is not None},
                      (*sampler_warnings, *condition_warnings))


def hires_sampler_fields(txt2img, strict: bool) -> tuple[dict[str, Any], dict[str, Any], tuple[str, ...]]:
    body = txt2img.body
    hr_sampler = None if body.hr_sampler_name in (None, SAME_SAMPLER) else body.hr_sampler_name
    hr_scheduler = None if body.hr_scheduler in (None, SAME_SCHEDULER) else body.hr_scheduler
    if hr_sampler is None and hr_scheduler is None:
        return {}, {}, ()
    dialect = replace(txt2img.dialect, names={**txt2img.dialect.names, "sampler": "hr_sampler_name",
                                              "grid": "hr_scheduler"})
    names = resolve_names(hr_sampler or body.sampler_name or body.sampler_index, hr_scheduler or body.scheduler, None,
                          False, dialect, strict)
    run = settings_run(names.sampler, txt2img.settings, names.grid is not None)  # the UI's settings apply to it too
    options, dropped = options_of(body, names.sampler, dialect, run.options)
    first, second = txt2img.plan.sampler.name, names.sampler.name
    kind = schedule_type(names.sampler, names.scheduler)
    text = {"Hires sampler": second if second != first else None,
            "Hires schedule type": kind if kind != txt2img.schedule_type else None}
    return ({"sampler": second, "grid": names.grid or run.grid, "options": options}, text,
            (*names.warnings, *(w for w in (*run.warnings, *dropped) if w not in txt2img.warnings)))


def hires_condition_fields(txt2img) -> tuple[dict[str, Any], dict[str, Any], tuple[str, ...]]:
    body, model, request = txt2img.body, txt2img.model, txt2img.plan.request
    # the extra-network tags out of each; the same text as the first pass's (also without its tags) asks for nothing
    parsed = {name: parse_prompt(getattr(body, name)) for name in ("hr_prompt", "hr_negative_prompt")
              if getattr(body, name)}
    asked = {name: getattr(body, name) for name, (text, _, _) in parsed.items()
             if text != parse_prompt(getattr(body, name.removeprefix("hr_")))[0]}
    parsed = {name: parsed[name] for name in asked}
    if not asked:
        return {}, {}, ()
    warnings = [warning for _, _, found in parsed.values() for warning in found]
    warnings += [f"{name}'s <lora:...> tags ignored: the prompt's LoRAs apply to both passes"
                 for name, (_, tags, _) in parsed.items() if tags]
    if model.conditioning == "none":
        return {}, {}, (*warnings, *(f"{name} ignored: model {model.name} is unconditional" for name in asked))
    condition, text = {}, {}
    if "hr_prompt" in parsed:
        condition["label"], condition["prompt"] = prompt_fields(parsed["hr_prompt"][0], model, "hr_prompt")
        text["Hires prompt"] = asked["hr_prompt"]
    if "hr_negative_prompt" in parsed and request.guidance.cfg is None:
        warnings.append("hr_negative_prompt ignored: nothing is guided (cfg_scale 1)")
    elif "hr_negative_prompt" in parsed:
        label, prompt = prompt_fields(parsed["hr_negative_prompt"][0], model, "hr_negative_prompt")
        condition["guidance"] = replace(request.guidance, negative_label=label, negative_prompt=prompt)
        text["Hires negative prompt"] = asked["hr_negative_prompt"]
    return ({"condition": condition} if condition else {}), text, tuple(warnings)


def plan_stages(txt2img, refiner: ServedModel | None, upscalers: UpscalerCatalog | None = None,
                strict: bool = False,
                hires_model: ServedModel | None = None) -> tuple[Stages | None, int, int, tuple[str, ...]]:
    """The stages a planned txt2img's body asks for, checked against its model (and the loaded
    `refiner_checkpoint` and `hires_model` (hr_checkpoint_name), and the super-resolution models of `upscalers`;
    hr_sampler_name and hr_scheduler as
    sampler_name and scheduler are, `strict` as --strict-names), the size of the images answered, and warnings; a
    field that cannot be honoured is a RequestError naming it."""
    body, model, plan = txt2img.body, txt2img.model, txt2img.plan
    upscalers = upscalers or UpscalerCatalog()
    if body.refiner_switch_at is not None and refiner is None:
        raise RequestError("refiner_switch_at", "refiner_switch_at goes with refiner_checkpoint")
    sr = upscalers.find(body.hr_upscaler) if body.enable_hr and body.hr_upscaler not in (None, *HIRES_UPSCALERS) \
        else None
    if body.enable_hr and body.difflab_hr_noise_level is not None and sr is None:
        raise unused_noise_level()
    height, width = plan.shape[-2:]
    if not body.enable_hr and refiner is None:
        return None, width, height, ()
    hires = upscaler = sr_stage = noise_level = None
    hires_text: dict[str, Any] = {}
    warnings: tuple[str, ...] = ()
    if body.enable_hr:
        if model.decode is not None:
            raise RequestError("enable_hr", f"enable_hr runs on pixel models; model {model.name} is a latent model")
        if plan.request.controls:
            raise RequestError("enable_hr", "enable_hr with a ControlNet unit is not supported: its image is at the "
                                            "first pass's size")
        if txt2img.size_by is not None:
            raise RequestError("enable_hr", f"enable_hr samples the first pass at the model's size "
                                            f"({model.width}x{model.height}); leave width and height out and set "
                                            f"hr_scale or hr_resize_x / hr_resize_y")
        upscaler = body.hr_upscaler or DEFAULT_HIRES_UPSCALER
        if upscaler not in HIRES_UPSCALERS and sr is None:
            offered = [*HIRES_UPSCALERS, *(m.name for m in upscalers.models)]
            raise RequestError("hr_upscaler", f"unknown hires upscaler {upscaler!r}: with enable_hr, hr_upscaler must "
                                              f"be one of {', '.join(offered)}")
        second = second_pass(txt2img, strict)
        hires = Hires(body.hr_scale, body.hr_resize_x, body.hr_resize_y, body.denoising_strength,
                      body.hr_second_pass_steps, HIRES_UPSCALERS.get(upscaler, MODEL_UPSCALER), **second.hires)
        hires_text, warnings = second.text, second.warnings
        if hires_model is not None:
            check_hires_model(model, hires_model, plan.kinds)
            hires_text = {"Hires checkpoint": hires_model.short_title, **hires_text}  # the UI's order
        try:
            plan_hires(plan, model.config, hires, None if hires_model is None else (hires_model.denoiser,
                                                                                   hires_model.config))
        except DifflabError as err:
            raise RequestError("hr_scale", str(err)) from None
        height, width = hires_size(*plan.shape[-2:], hires).target
        if sr is not None:
            upscaler, noise_level = sr.name, body.difflab_hr_noise_level or 0.0
            sr_stage = upscalers.upscaler(sr, plan, plan.shape, (height, width), noise_level, txt2img.dialect)
    switch_at = None
    if refiner is not None:
        switch_at = DEFAULT_SWITCH_AT if body.refiner_switch_at is None else body.refiner_switch_at
        try:
            check_refiner(model.config, refiner.config, plan.kinds)
            Refined(plan.denoiser, refiner.denoiser, switch_at)
        except DifflabError as err:
            raise RequestError("refiner_checkpoint", str(err).replace("--refiner-switch-at", "refiner_switch_at")
                               .replace("--refiner", "refiner_checkpoint")) from None
    return (Stages(hires, upscaler, refiner, switch_at, sr_stage, noise_level, hires_text, hires_model), width, height,
            warnings)


def check_hires_model(model: ServedModel, hires_model: ServedModel, kinds: frozenset[str]) -> None:
    """hr_checkpoint_name's model can run the second pass of this request, or a RequestError naming the field."""
    if hires_model.decode is not None:
        raise RequestError("hr_checkpoint_name", f"hr_checkpoint_name {hires_model.title!r} is a latent model; the "
                                                 f"hires fix's second pass runs on pixel models")
    try:
        check_second_model(model.config, hires_model.config, kinds)
    except DifflabError as err:
        raise RequestError("hr_checkpoint_name", str(err).replace("--hires-model", "hr_checkpoint_name")) from None


def with_stages(txt2img, refiner: ServedModel | None, upscalers: UpscalerCatalog | None = None,
                strict: bool = False, hires_model: ServedModel | None = None):
    """A planned txt2img (difflab.serve.generation.Txt2Img) with the stages its body asks for, answering at their
    size."""
    stages, width, height, warnings = plan_stages(txt2img, refiner, upscalers, strict, hires_model)
    return txt2img if stages is None else replace(txt2img, stages=stages, width=width, height=height,
                                                  warnings=(*txt2img.warnings, *warnings))
