"""`difflab sample`: draw samples from a checkpoint (the bundled Fashion-MNIST model by default)."""

from __future__ import annotations

import argparse
import time
from dataclasses import replace
from pathlib import Path

from difflab import distributed
from difflab.commands import BUNDLED_CONDITIONAL_MODEL, model_file, positive_int, set_threads
from difflab.commands.control_flags import add_control_arguments, controls_from_args
from difflab.commands.guidance_flags import add_guidance_arguments, guidance_request
from difflab.commands.stage_flags import add_stage_arguments, model_argument, run_stages
from difflab.denoiser import Denoiser
from difflab.errors import DifflabError
from difflab.distributed import DEVICES, init_shard, resolve_device
from difflab.grids import GRIDS
from difflab.images import save_samples
from difflab.pipelines.dialect import CLI
from difflab.pipelines.request import Request, plan_request
from difflab.pipelines.samplers import OPTION_RANGES, choose_sampler, resolve_sampler
from difflab.precision import SAMPLING_PRECISIONS
from difflab.samplers import unipc
from difflab.samplers.common import StepInfo
from difflab.model import Model, load_model
from difflab.adapters.use import apply_adapters


def add_sampling_arguments(p: argparse.ArgumentParser) -> None:
    """The flags that choose how to sample; shared by every command that generates."""
    p.add_argument("--sampler", default="ddim", help="sampler name (see `difflab samplers`) or a web UI name such as "
                                                     "'DPM++ 2M Karras'; default ddim")
    p.add_argument("--steps", type=positive_int("--steps"),
                   help="number of grid steps (default 50; a progressive student's own; with --sampler consistency "
                        "the most its chosen re-noising levels cover, else 1); for rk45 the number of "
                        "output levels it stops at, its own steps being chosen by --rtol/--atol; for svgd the number "
                        "of updates")
    p.add_argument("--grid", choices=GRIDS, help="noise-level spacing (default: the one a web UI sampler name implies, "
                                                 "else the sampler's default in `difflab samplers`; on an EDM model "
                                                 "karras unless that is log_snr)")
    p.add_argument("--sections", help='--grid respaced: section counts "10,15,20" or "ddimN" adding up to --steps')
    p.add_argument("--sigmas", type=noise_levels, metavar="S1,S2,...",
                   help="the noise levels to sample on, descending, instead of --steps and --grid: e.g. a consistency "
                        "model's levels (the first, then each re-noising one)")
    p.add_argument("--eta", type=float, help="DDIM / Euler-ancestral stochasticity (0 = deterministic, 1 = DDPM; "
                   "also dpm_2_ancestral, dpmpp_2s_ancestral); dpmpp_2m_sde(_heun), dpmpp_3m_sde: the SDE's Langevin "
                   "share (default 1; 0 = the ODE solver)")
    p.add_argument("--variance", choices=["learned", "beta_tilde", "beta"],
                   help="DDPM step variance (default: the model's learned variance where it has one, else beta_tilde)")
    p.add_argument("--s-churn", type=float, help="euler/heun/dpm_2: EDM S_churn >= 0 (default 0, no churn)")
    p.add_argument("--s-tmin", type=float, help="euler/heun/dpm_2: churn only for sigma >= S_tmin (default 0)")
    p.add_argument("--s-tmax", type=float, help="euler/heun/dpm_2: churn only for sigma <= S_tmax (default inf)")
    p.add_argument("--s-noise", type=float, help="euler/heun/dpm_2: EDM S_noise > 0 (default 1); the SDE and "
                   "ancestral DPM samplers: scale of their fresh noise")
    p.add_argument("--rtol", type=float, help="rk45: relative tolerance in (0, 1) (default 1e-4)")
    p.add_argument("--atol", type=float, help="rk45: absolute tolerance > 0 (default 1e-4)")
    p.add_argument("--sde", choices=["vp", "subvp", "ve"], help="euler_maruyama: which SDE (default vp)")
    p.add_argument("--snr", type=float, help="predictor_corrector: Langevin signal-to-noise ratio > 0 (default 0.16)")
    p.add_argument("--langevin-steps", type=int,
                   help="predictor_corrector / annealed_langevin: Langevin steps per level >= 1 (default 1)")
    p.add_argument("--step-size", type=float, help="> 0; annealed_langevin: Langevin step / sigma^2 (default 0.2); "
                                                   "svgd: distance moved per update (default 0.02)")
    p.add_argument("--window", type=int, help="paradigms_*: steps evaluated in parallel per round (default 8)")
    p.add_argument("--tolerance", type=float, help="paradigms_*: Picard tolerance on the step's noise std, >= 0 "
                                                   "(default 0.1; 0 gives the sequential sampler's result)")
    p.add_argument("--order", type=int, help="unipc: the predictor's order p, 1, 2 or 3 (the corrector makes it p + 1; "
                                             "default 2)")
    p.add_argument("--solver-type", choices=unipc.SOLVER_TYPES, help="unipc: B(h) = h (bh1) or e^h - 1 (bh2, default)")
    p.add_argument("--seed", type=int, default=0, help="sample i uses seed + i")
    p.add_argument("--batch", type=positive_int("--batch"), default=64)
    p.add_argument("--threads", type=int, help="CPU threads for torch")
    p.add_argument("--device", choices=DEVICES, default="auto",
                   help="where to sample (default auto: cuda where available); seeds reproduce per device type")
    p.add_argument("--precision", choices=SAMPLING_PRECISIONS, default="fp32",
                   help="bf16: the network under bf16 autocast, the sampler's update in float64; about 2x the "
                        "speed on a CPU with AMX at the same FD (README, 'bf16 sampling'); default fp32")


def noise_levels(text: str) -> tuple[float, ...]:
    """--sigmas "157.4,0.8" -> (157.4, 0.8)."""
    try:
        return tuple(float(level) for level in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be numbers separated by commas, got {text!r}") from None


def sampler_options(args: argparse.Namespace, denoiser: Denoiser) -> dict:
    """Keyword options for the chosen sampler; an option the sampler or the model cannot take is an error."""
    options = {name: getattr(args, name) for name in OPTION_RANGES if getattr(args, name, None) is not None}
    return choose_sampler(args.sampler, args.grid, args.sections, options, denoiser, CLI)[1]


def default_steps(model: Model, sampler: str) -> int:
    """50; a progressive-distillation student's own steps; for the consistency sampler the most steps the re-noising
    levels chosen for the model cover (FD falls with each: README, Few-step sampling), else 1."""
    config = model.checkpoint.config
    if config.student_grid is not None:
        return config.student_grid.steps
    if sampler == "consistency":
        chosen = config.consistency_levels
        return 1 + (0 if chosen is None else len(chosen.renoise))
    return 50


def request_from_args(args: argparse.Namespace, model: Model, n: int, label: int | None = None,
                      prompt: str | None = None) -> Request:
    """The Request that the sampling and guidance flags ask for, for `model`."""
    denoiser = model.denoiser
    if args.sigmas is not None:
        given = [flag for flag, value in (("--grid", args.grid), ("--sections", args.sections)) if value is not None]
        given += ["--steps"] if args.steps not in (None, len(args.sigmas)) else []  # set here on an earlier call
        if given:
            raise DifflabError(f"--sigmas gives the levels themselves: leave out {' and '.join(given)}")
        args.steps = len(args.sigmas)
    if args.steps is None:
        args.steps = default_steps(model, resolve_sampler(args.sampler, args.grid, CLI, denoiser.default_grid).sampler)
    return Request(label=label, prompt=prompt, guidance=guidance_request(args, model.files.get("classifier")),
                   sampler=args.sampler, grid=args.grid, sections=args.sections, sigmas=args.sigmas,
                   options=sampler_options(args, denoiser), steps=args.steps, n=n,
                   seed=args.seed, batch=args.batch, precision=args.precision)


def register(subparsers) -> None:
    p = subparsers.add_parser("sample", help="sample from a checkpoint", description=__doc__)
    p.add_argument("checkpoint", nargs="?",
                   help="a .safetensors checkpoint or a .json model manifest {\"denoiser\": FILE, \"classifier\": "
                        "FILE, \"autoencoder\": FILE}, or 'latent' (the bundled latent text-to-image model); "
                        "default: the bundled conditional model, which also samples unconditionally")
    add_sampling_arguments(p)
    p.add_argument("--n", "--num-samples", dest="n", type=positive_int("--n"), default=64,
                   help="number of samples (default 64); spell it --num-samples under torchrun, which takes --n as "
                        "its own")
    p.add_argument("--class", dest="label", type=int, help="class index for a class-conditional model (or for "
                                                           "--classifier guidance)")
    p.add_argument("--prompt", help="text prompt for a text-conditional model, e.g. 'a dark ankle boot'")
    p.add_argument("--out", default="samples.png", help="FILE.png (grid or scatter plot) or FILE.npz")
    add_guidance_arguments(p)
    p.add_argument("--lora", action="append", metavar="FILE[:WEIGHT]",
                   help="attach a LoRA trained on this model, scaled by WEIGHT (default 1); repeatable")
    p.add_argument("--embedding", action="append", metavar="FILE",
                   help="a textual-inversion embedding: prompts containing its token use it; repeatable")
    add_control_arguments(p)
    add_stage_arguments(p)
    p.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    set_threads(args.threads)
    if Path(args.out).suffix.lower() not in (".png", ".npz"):
        raise DifflabError(f"--out must end in .png or .npz, got {args.out!r}")
    model = load_model(model_file(model_argument(args), BUNDLED_CONDITIONAL_MODEL))
    for line in apply_adapters(model, args.lora, args.embedding):
        print(f"using {line}")
    checkpoint = model.checkpoint
    request = request_from_args(args, model, args.n, label=args.label, prompt=args.prompt)
    request = replace(request, controls=controls_from_args(args, tuple(checkpoint.config.data_shape[-2:])))
    device = resolve_device(args.device)
    plan = plan_request(request, model.to(device).denoiser, checkpoint.config, decode=model.decoder)
    labels = None if plan.cond is None else plan.cond.labels
    nfe: dict[int, int] = {}  # batch -> network evaluations, from samplers that report them (rk45)
    rounds: dict[int, int] = {}  # batch -> sequential network calls, from parallel samplers (paradigms_*)

    def count_nfe(batch: int, step: StepInfo) -> None:
        if step.nfe is not None:
            nfe[batch] = step.nfe
        if step.rounds is not None:
            rounds[batch] = step.rounds

    start = time.perf_counter()
    shard = init_shard(device)  # under torchrun each process draws a range of the samples
    try:
        x = run_stages(args, plan, checkpoint.config, device, request_from_args,
                       lambda plan: plan.sample(callback=count_nfe, progress=shard.is_main), shard.is_main)
    finally:
        distributed.close()
    if not shard.is_main:
        return 0
    title = f"{args.sampler}, {args.steps} steps" + ("" if args.precision == "fp32" else f", {args.precision}")
    save_samples(x, args.out, labels, title=f"{args.prompt!r}, {title}" if args.prompt else title)
    processes = f" on {shard.world} processes" if shard.world > 1 else ""
    print(f"wrote {args.n} samples to {args.out} ({args.sampler}, {args.steps} steps, "
          f"{time.perf_counter() - start:.1f} s{processes})")
    if nfe:
        print(f"network evaluations per batch: {', '.join(str(nfe[b]) for b in sorted(nfe))}")
    if rounds:
        print(f"sequential rounds per batch: {', '.join(str(rounds[b]) for b in sorted(rounds))}")
    return 0
