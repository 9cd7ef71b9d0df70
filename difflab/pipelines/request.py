"""One generation path for the CLI, the Python API and the server: a Request, checked against a model by plan(),
then sampled by the Plan.

    plan = plan_request(Request(prompt="a dark bag", guidance=GuidanceRequest(cfg=3), sampler="DPM++ 2M Karras",
                                steps=20, n=4), denoiser, checkpoint.config)
    x = plan.sample()
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any

import torch

from difflab.conditioning import Condition
from difflab.denoiser import Denoiser
from difflab.errors import DifflabError
from difflab.grids import GridKind, make_grid
from difflab.guidance import Guidance
from difflab.pipelines.conditions import accepted, describe_conditioning, request_condition
from difflab.pipelines.control import apply_controls
from difflab.pipelines.dialect import CLI, Dialect
from difflab.pipelines.generate import Decode, generate_batches, generate_sharded
from difflab.pipelines.guidance import GuidanceRequest, plan_guidance
from difflab.pipelines.samplers import SamplerName, choose_sampler, split_scheduler
from difflab.samplers.common import StepInfo
from difflab.train.config import ExperimentConfig

if TYPE_CHECKING:
    from difflab.edit.inpaint import Inpainting
    from difflab.pipelines.control import ControlUnit

CONDITION_FIELDS = {"label": "class", "prompt": "text"}  # Request (and GuidanceRequest negative_*) field -> kind


@dataclass(frozen=True)
class Request:
    """What to generate. `sampler` is a difflab sampler or a web UI name ("DPM++ 2M Karras"); `grid` None is the one
    the name implies (a difflab sampler: its default); `options` are the sampler's keyword options (eta, s_churn, ...).
    Sample i uses seed + i. `start` [n or 1, *shape] and `sigma_start` begin sampling from a start image (img2img).
    `sigmas` (steps of them, descending) are the noise levels to sample on, given instead of the grid's spacing."""

    label: int | None = None
    prompt: str | None = None
    guidance: GuidanceRequest = GuidanceRequest()
    sampler: str = "ddim"
    grid: GridKind | None = None
    sections: str | None = None
    sigmas: tuple[float, ...] | None = None
    options: Mapping[str, Any] = field(default_factory=dict)
    steps: int = 50
    n: int = 1
    seed: int = 0
    batch: int = 64
    start: torch.Tensor | None = None
    sigma_start: float | None = None
    start_noised: bool = False  # the start is already at sigma_start (an inverted image)
    inpaint: Inpainting | None = None  # regenerate only inside a mask (difflab.edit.inpaint)
    controls: tuple[ControlUnit, ...] = ()  # ControlNets and their images (difflab.pipelines.control)
    precision: str = "fp32"  # "bf16": the network under bf16 autocast (difflab.precision)


@dataclass(frozen=True, eq=False)
class Plan:
    """A request checked against a model, with its sampler resolved and its condition and guidance built."""

    request: Request  # as used: in the web UI dialect without the fields the model cannot use
    denoiser: Denoiser
    shape: tuple[int, ...]
    sampler: SamplerName
    options: dict[str, Any]
    cond: Condition | None  # n rows
    guidance: Guidance | None
    class_names: tuple[str, ...] | None  # what labels index: the model's classes, or a guiding classifier's
    warnings: tuple[str, ...] = ()  # what was dropped, and why
    decode: Decode | None = None  # the sampler's output -> images: a latent model's decoder (Model.decoder)
    levels: tuple[float, ...] | None = None  # the request's sigmas, or a consistency model's chosen ones; None: grid

    @property
    def kinds(self) -> frozenset[str]:
        """The condition kinds its request carries (none: the empty set)."""
        return frozenset() if self.cond is None else self.cond.kinds

    def grid(self) -> torch.Tensor:
        """The noise levels this plan samples on, descending to 0 (before any start level cuts them)."""
        return request_grid(self.request, self.denoiser, self.sampler, self.levels)

    def _arguments(self) -> dict[str, Any]:
        request = self.request
        return dict(sampler=self.sampler.sampler, steps=request.steps, grid=self.sampler.grid,
                    sections=request.sections, levels=self.levels, seed=request.seed, batch=request.batch,
                    cond=self.cond,
                    options=self.options, guidance=self.guidance, start=request.start, sigma_start=request.sigma_start,
                    decode=self.decode, start_noised=request.start_noised, inpaint=request.inpaint,
                    precision=request.precision)

    def batches(self, callback: Callable[[int, StepInfo], None] | None = None) -> Iterator[torch.Tensor]:
        """All n samples in this process, batch by batch as each is done (a server keeps those done when
        interrupted)."""
        return generate_batches(self.denoiser, self.shape, self.request.n, callback=callback, **self._arguments())

    def sample(self, callback: Callable[[int, StepInfo], None] | None = None, progress: bool = False) -> torch.Tensor:
        """All n samples, shared by whole batches among the torchrun processes if there are several."""
        return generate_sharded(self.denoiser, self.shape, self.request.n, callback=callback, progress=progress,
                                **self._arguments())


def plan_request(request: Request, denoiser: Denoiser, config: ExperimentConfig, dialect: Dialect = CLI,
                 decode: Decode | None = None) -> Plan:
    """Check `request` against the model (`denoiser` and its checkpoint's `config`, and for a latent model the
    `decode` of its Model): each field it cannot honour is a RequestError naming the field in the caller's `dialect`.
    The web UI's fields that a model cannot use are dropped instead, each with a warning."""
    request, warnings = drop_unusable(request, config, dialect) if dialect.web_ui else (request, ())
    student = config.student_grid  # a progressive-distillation student (difflab.distill.progressive): on its grid
    grid = request.grid or (None if student is None else student.kind)
    sampler, options = choose_sampler(request.sampler, grid, request.sections, request.options, denoiser, dialect)
    levels = request.sigmas or chosen_levels(request, config, sampler)
    try:
        sigmas = request_grid(request, denoiser, sampler, levels)
    except DifflabError as err:
        raise dialect.error("steps", str(err)) from None
    reason = None if student is None else student.check(sigmas, sampler.sampler, dialect.web_ui)
    if reason is not None:
        raise dialect.error("steps", reason)
    guidance, class_names = plan_guidance(request.guidance, config, dialect)
    row = request_condition(config, label=request.label, prompt=request.prompt, class_names=class_names,
                            dialect=dialect)
    plan = Plan(request, denoiser, tuple(config.data_shape), sampler, options,
                None if row is None else row.repeat(request.n), guidance, class_names, warnings, decode=decode,
                levels=levels)
    return apply_controls(plan, request.controls)


def request_grid(request: Request, denoiser: Denoiser, sampler: SamplerName,
                 levels: tuple[float, ...] | None) -> torch.Tensor:
    """The request's noise levels: the given `levels`, or its steps on the sampler's grid."""
    return make_grid(denoiser.schedule, request.steps, sampler.grid, request.sections, levels,
                     renoising=sampler.sampler == "consistency")


def chosen_levels(request: Request, config: ExperimentConfig, sampler: SamplerName) -> tuple[float, ...] | None:
    """The re-noising levels chosen for a consistency model (difflab distill levels) where the request names no grid
    (nor a scheduler in the sampler's name, as "LCM Karras" does) and they cover its steps, else None."""
    levels = config.consistency_levels
    named = request.grid is not None or split_scheduler(request.sampler)[1] is not None
    if sampler.sampler != "consistency" or levels is None or named:
        return None
    return levels.sampling(request.steps)


def drop_unusable(request: Request, config: ExperimentConfig, dialect: Dialect) -> tuple[Request, tuple[str, ...]]:
    """The request without the conditions the model does not accept and the negatives without guidance, and a
    warning for each (the web UI's clients send a prompt and a negative prompt always)."""
    kinds, warnings = accepted(config), []
    unaccepted = [name for name, kind in CONDITION_FIELDS.items() if getattr(request, name) and kind not in kinds]
    negatives = [f"negative_{name}" for name, kind in CONDITION_FIELDS.items()
                 if getattr(request.guidance, f"negative_{name}") and kind not in kinds]
    for name in unaccepted + negatives:
        warnings.append(f"{dialect.name(name)} ignored: {dialect.model} is {describe_conditioning(config)}")
    guidance = replace(request.guidance, **{name: None for name in negatives})
    for name in guidance.unguided_negatives():
        warnings.append(f"{dialect.name(name)} ignored: it acts only through guidance, with {dialect.name('cfg')} > "
                        f"{dialect.neutral_cfg:g}")
    guidance = replace(guidance, **{name: None for name in guidance.unguided_negatives()})
    return replace(request, guidance=guidance, **{name: None for name in unaccepted}), tuple(warnings)
