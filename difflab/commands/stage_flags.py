"""`difflab sample`'s multi-stage flags: a cascade (--cascade BASE SR), the hires fix (--hires-*) and a refiner
(--refiner CKPT --refiner-switch-at F), each a pipeline of the one generation path's Plans."""

from __future__ import annotations

import argparse
import copy
from collections.abc import Callable
from dataclasses import replace

import torch

from difflab.commands import positive_int
from difflab.denoiser import Denoiser
from difflab.errors import DifflabError
from difflab.grids import GRIDS
from difflab.lowres import UPSAMPLE_MODES
from difflab.model import Model, load_model
from difflab.pipelines.cascade import SuperResolution, run_cascade, stage_request
from difflab.pipelines.hires import MODEL_UPSCALER, Hires, check_second_model, run_hires
from difflab.pipelines.refiner import Refined, check_refiner
from difflab.pipelines.request import Plan, plan_request
from difflab.pipelines.samplers import OPTION_RANGES
from difflab.train.config import ExperimentConfig


def add_stage_arguments(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("multi-stage generation")
    g.add_argument("--cascade", nargs=2, metavar=("BASE", "SR"),
                   help="cascaded diffusion: sample BASE, upsample, then the super-resolution model SR conditioned on "
                        "it (instead of the positional checkpoint); --sampler/--steps/--grid and the sampler options "
                        "apply to BASE, --sr-* to SR")
    g.add_argument("--sr-sampler", help="the super-resolution stage's sampler (default: --sampler, with its options)")
    g.add_argument("--sr-steps", type=positive_int("--sr-steps"), help="its steps (default: --steps)")
    g.add_argument("--sr-grid", choices=GRIDS, help="its grid (default: the one its sampler name implies)")
    g.add_argument("--noise-level", type=float, default=0.0,
                   help="the super-resolution stage's noise-conditioning augmentation level s: the low-res image "
                        "gets N(0, s^2) noise and the model is told s (default 0: none; the README gives the level "
                        "the sweep chose)")
    g.add_argument("--hires-scale", type=float, help="hires fix (A1111 hr_scale): sample, upscale by this factor, "
                                                     "denoise again at the larger size")
    g.add_argument("--hires-resize-x", type=int, default=0, help="hires fix to this width instead (A1111 hr_resize_x)")
    g.add_argument("--hires-resize-y", type=int, default=0, help="and/or height (A1111 hr_resize_y)")
    g.add_argument("--hires-strength", type=float, default=0.75,
                   help="the second pass's denoising strength in [0, 1] (A1111 denoising_strength, default 0.75)")
    g.add_argument("--hires-steps", type=int, default=0,
                   help="the second pass's steps (A1111 hr_second_pass_steps; default 0: --steps)")
    g.add_argument("--hires-upscaler", default="bilinear",
                   help=f"{' | '.join(UPSAMPLE_MODES)} | a super-resolution model file (A1111 hr_upscaler); "
                        "default bilinear")
    g.add_argument("--hires-sampler", help="the second pass's sampler, run with its default options (A1111 "
                                           "hr_sampler_name; default: --sampler with its options)")
    g.add_argument("--hires-grid", choices=GRIDS, help="the second pass's grid (A1111 hr_scheduler; default: the first "
                                                       "pass's, or with --hires-sampler that sampler's own)")
    g.add_argument("--hires-model", metavar="CKPT", help="the second pass's model (A1111 hr_checkpoint_name; default: "
                                                         "the first pass's): a pixel U-Net of the same channels that "
                                                         "accepts the request's condition")
    g.add_argument("--refiner", metavar="CKPT", help="a second denoiser that takes over the low-noise end of the "
                                                     "trajectory (A1111 refiner_checkpoint)")
    g.add_argument("--refiner-switch-at", type=float, metavar="F",
                   help="the share of the trajectory the first model runs before the refiner takes over, in [0, 1] "
                        "(A1111 refiner_switch_at; default 0.8)")


def model_argument(args: argparse.Namespace) -> str | None:
    """The model the first stage samples: the positional checkpoint, or the cascade's base."""
    if args.cascade is None:
        for name in ("sr_sampler", "sr_steps", "sr_grid"):
            if getattr(args, name) is not None:
                raise DifflabError(f"--{name.replace('_', '-')} goes with --cascade BASE SR")
        return args.checkpoint
    if args.checkpoint is not None:
        raise DifflabError("--cascade BASE SR names the models: leave out the positional checkpoint")
    return args.cascade[0]


def hires_of(args: argparse.Namespace) -> Hires | None:
    if args.hires_scale is None and not (args.hires_resize_x or args.hires_resize_y):
        for name in ("hires_sampler", "hires_grid", "hires_model"):
            if getattr(args, name) is not None:
                raise DifflabError(f"--{name.replace('_', '-')} goes with --hires-scale or --hires-resize-x/y")
        return None
    upscaler = args.hires_upscaler if args.hires_upscaler in UPSAMPLE_MODES else MODEL_UPSCALER
    return Hires(args.hires_scale or 2.0, args.hires_resize_x, args.hires_resize_y, args.hires_strength,
                 args.hires_steps, upscaler, sampler=args.hires_sampler, grid=args.hires_grid)


def with_refiner(args: argparse.Namespace, plan: Plan, config: ExperimentConfig, device) -> Plan:
    """The plan with its denoiser handing over to --refiner past --refiner-switch-at."""
    if args.refiner is None:
        if args.refiner_switch_at is not None:
            raise DifflabError("--refiner-switch-at goes with --refiner CKPT")
        return plan
    refiner = load_model(args.refiner)
    check_refiner(config, refiner.checkpoint.config, plan.kinds)
    switch_at = 0.8 if args.refiner_switch_at is None else args.refiner_switch_at
    return replace(plan, denoiser=Refined(plan.denoiser, refiner.denoiser.to(device), switch_at))


def hires_model(args: argparse.Namespace, plan: Plan, config: ExperimentConfig,
                device) -> tuple[Denoiser, ExperimentConfig] | None:
    """--hires-model's denoiser and config, checked against the first pass's model and condition."""
    if args.hires_model is None:
        return None
    model = load_model(args.hires_model)
    if model.latent is not None:
        raise DifflabError("--hires-model must be a pixel model: the hires fix denoises the upscaled images themselves")
    check_second_model(config, model.checkpoint.config, plan.kinds)
    return model.denoiser.to(device), model.checkpoint.config


def super_resolution(args: argparse.Namespace, path: str, plan: Plan, device,
                     request_from_args: Callable) -> SuperResolution:
    """The super-resolution stage at `path`: the first stage's request with the --sr-* sampler, and its class or
    text only where the model takes them (else they reach it through the low-resolution image)."""
    model: Model = load_model(path)
    config = model.checkpoint.config
    stage = copy.copy(args)
    stage.sampler, stage.steps, stage.grid = args.sr_sampler or args.sampler, args.sr_steps or args.steps, args.sr_grid
    stage.sigmas = None  # the first stage's levels are its own
    if args.sr_sampler is not None and args.sr_sampler != args.sampler:
        for name in OPTION_RANGES:  # the first stage's sampler options are its own
            setattr(stage, name, None)
    request = stage_request(request_from_args(stage, model, plan.request.n, label=args.label, prompt=args.prompt),
                            config)
    return SuperResolution(plan_request(request, model.denoiser.to(device), config), config, args.noise_level)


def run_stages(args: argparse.Namespace, plan: Plan, config: ExperimentConfig, device, request_from_args: Callable,
               sample: Callable[[Plan], torch.Tensor], progress: bool = True) -> torch.Tensor:
    """The samples the stage flags ask for (`sample(plan)` alone when none is given)."""
    plan = with_refiner(args, plan, config, device)
    hires = hires_of(args)
    if hires is not None and args.cascade is not None:
        raise DifflabError("--cascade and the hires fix are two ways to a larger image: use one")
    if (hires is not None or args.cascade is not None) and plan.decode is not None:
        raise DifflabError("multi-stage generation runs on pixel models; this one is a latent model")
    if args.cascade is not None:
        sr = super_resolution(args, args.cascade[1], plan, device, request_from_args)
        return run_cascade(plan, sr, progress).samples
    if hires is not None:
        upscaler = None
        if hires.upscaler == MODEL_UPSCALER:
            upscaler = super_resolution(args, args.hires_upscaler, plan, device, request_from_args)
        return run_hires(plan, config, hires, upscaler=upscaler, model=hires_model(args, plan, config, device),
                         progress=progress).samples
    return sample(plan)
