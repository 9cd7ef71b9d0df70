"""Sampler overhead on the bundled Fashion-MNIST model: the share of time spent outside network evaluations for
every sampler, and ours against the matching diffusers scheduler on the same network, side by side.

Each pair runs on the same U-Net with the same number of network evaluations (NFE); rounds alternate ours and
theirs so that machine noise hits both alike, and the fastest round of each is kept. Our trajectory is float64
(as `difflab sample` runs it; --dtype float32 for a like-for-like overhead), theirs float32 as their pipelines
run it; the network is float32 in both. "outside" is the share of the sampler's wall time not spent in the
network's forward; the ratios are ours / theirs for the total time and for the time outside the network.

    python bench/sampler_overhead.py [CHECKPOINT] [--steps 10] [--batch 64] [--rounds 2] [--samplers a,b]

Without a checkpoint it uses the bundled model, or, while that is missing, a randomly initialised U-Net of the
bundled recipe (the cost of a network evaluation does not depend on its weights).
"""

from __future__ import annotations

import argparse
import inspect
import time
from pathlib import Path

import torch

from difflab.commands import BUNDLED_MODEL
from difflab.denoiser import Denoiser, VPPrecond
from difflab.errors import run_script
from difflab.grids import make_grid
from difflab.nets import build_network
from difflab.samplers import SAMPLERS
from difflab.schedules import DiscreteSchedule
from difflab.train.checkpoint import load_denoiser
from difflab.train.config import load_config

RECIPE = Path(__file__).resolve().parent.parent / "difflab" / "configs" / "fashion_mnist.json"
BETA_SCHEDULES = {"linear": "linear", "scaled_linear": "scaled_linear", "cosine": "squaredcos_cap_v2",
                  "sigmoid": "sigmoid"}


class TimedNet(torch.nn.Module):
    """The network with a stopwatch: `seconds` accumulates the time spent inside its forward."""

    def __init__(self, net: torch.nn.Module):
        super().__init__()
        self.net, self.seconds, self.calls = net, 0.0, 0

    def forward(self, x, timestep, cond=None):
        start = time.perf_counter()
        out = self.net(x, timestep, cond)
        self.seconds += time.perf_counter() - start
        self.calls += 1
        return out


def diffusers_pair(name: str, schedule: DiscreteSchedule, steps: int):
    """(scheduler, our grid, kwargs) for the diffusers scheduler matching sampler `name`, or None."""
    import diffusers

    c = schedule.config
    base = dict(num_train_timesteps=c.timesteps, beta_start=c.beta_start, beta_end=c.beta_end,
                beta_schedule=BETA_SCHEDULES[c.kind])
    dpm = dict(base, final_sigmas_type="zero", timestep_spacing="trailing")
    makers = {
        "ddpm": lambda: diffusers.DDPMScheduler(**base, clip_sample=False),
        "ddim": lambda: diffusers.DDIMScheduler(**base, clip_sample=False, timestep_spacing="trailing"),
        "euler": lambda: diffusers.EulerDiscreteScheduler(**base, use_karras_sigmas=True),
        "euler_ancestral": lambda: diffusers.EulerAncestralDiscreteScheduler(**base),
        "heun": lambda: diffusers.HeunDiscreteScheduler(**base, use_karras_sigmas=True),
        "dpm_solver_2": lambda: diffusers.KDPM2DiscreteScheduler(**base),
        "dpmpp_2m": lambda: diffusers.DPMSolverMultistepScheduler(**dpm, solver_order=2),
        "dpmpp_3m": lambda: diffusers.DPMSolverMultistepScheduler(**dpm, solver_order=3),
        "dpmpp_2m_sde": lambda: diffusers.DPMSolverMultistepScheduler(**dpm, solver_order=2,
                                                                      algorithm_type="sde-dpmsolver++"),
    }
    if name not in makers:
        return None
    scheduler = makers[name]()
    scheduler.set_timesteps(steps)
    if name in ("ddpm", "ddim"):
        return scheduler, make_grid(schedule, steps, "leading" if name == "ddpm" else "trailing")
    return scheduler, scheduler.sigmas.double().unique_consecutive()


def run_ours(name, denoiser, timed, sigmas, shape, batch, options, dtype) -> tuple[float, float, int]:
    g = torch.Generator().manual_seed(0)
    x = torch.randn((batch, *shape), generator=g, dtype=dtype) * denoiser.prior_std(float(sigmas[0]))
    timed.seconds, timed.calls = 0.0, 0
    start = time.perf_counter()
    SAMPLERS[name].fn(denoiser, x, sigmas, generator=g, **options)
    return time.perf_counter() - start, timed.seconds, timed.calls


def run_theirs(scheduler, timed, shape, batch) -> tuple[float, float, int]:
    g = torch.Generator().manual_seed(0)
    x = torch.randn((batch, *shape), generator=g) * scheduler.init_noise_sigma
    takes_generator = "generator" in inspect.signature(scheduler.step).parameters  # not Heun's or KDPM2's
    timed.seconds, timed.calls = 0.0, 0
    start = time.perf_counter()
    for t in scheduler.timesteps:
        x_in = scheduler.scale_model_input(x, t)
        eps = timed(x_in, torch.as_tensor(t, dtype=torch.float32).expand(batch))
        x = scheduler.step(eps, t, x, **({"generator": g} if takes_generator else {})).prev_sample
    return time.perf_counter() - start, timed.seconds, timed.calls


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("checkpoint", nargs="?", help="default: the bundled model")
    p.add_argument("--steps", type=int, default=10, help="grid steps per sampler (default 10)")
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--rounds", type=int, default=2, help="alternating rounds; the fastest is kept (default 2)")
    p.add_argument("--samplers", help="comma-separated subset (default: all)")
    p.add_argument("--threads", type=int, help="torch CPU threads")
    p.add_argument("--dtype", choices=["float64", "float32"], default="float64",
                   help="our trajectory's dtype (default float64, as `difflab sample`; diffusers' is float32)")
    args = p.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.set_grad_enabled(False)

    path = Path(args.checkpoint) if args.checkpoint else BUNDLED_MODEL
    if path.is_file():
        denoiser, checkpoint = load_denoiser(path)
        shape, source = checkpoint.config.data_shape, f"{path} (step {checkpoint.step})"
    else:
        config = load_config(RECIPE)
        precond = VPPrecond(DiscreteSchedule(config.schedule), config.prediction)
        denoiser = Denoiser(build_network(config.network), precond).eval()
        shape, source = config.data_shape, f"randomly initialised U-Net of {RECIPE.name} ({path} not found)"
    timed = TimedNet(denoiser.net)
    denoiser.net = timed
    names = args.samplers.split(",") if args.samplers else sorted(SAMPLERS)
    dtype = getattr(torch, args.dtype)
    run_ours("ddim", denoiser, timed, make_grid(denoiser.schedule, 2, "trailing"), shape, args.batch, {}, dtype)
    print(f"{source}; batch {args.batch}, {args.steps} steps, {torch.get_num_threads()} threads, "
          f"best of {args.rounds} rounds, our trajectory in {args.dtype}\n")
    print(f"{'sampler':<20} {'NFE':>4} {'ours s':>8} {'outside':>8}   {'diffusers scheduler':<30} {'NFE':>4} "
          f"{'theirs s':>8} {'outside':>8} {'total ratio':>11} {'outside ratio':>13}")
    worst = 0.0
    for name in names:
        pair = diffusers_pair(name, denoiser.schedule, args.steps)
        sigmas = pair[1] if pair else make_grid(denoiser.schedule, args.steps, "karras")
        options = {"rtol": 1e-2, "atol": 1e-2} if name == "rk45" else {}
        ours, theirs = [], []  # (total, network, calls) per round
        for _ in range(args.rounds):
            ours.append(run_ours(name, denoiser, timed, sigmas, shape, args.batch, options, dtype))
            if pair:
                scheduler = diffusers_pair(name, denoiser.schedule, args.steps)[0]  # fresh state each round
                theirs.append(run_theirs(scheduler, timed, shape, args.batch))
        total, net, calls = min(ours)
        outside = 1 - net / total
        worst = max(worst, outside)
        row = f"{name:<20} {calls:>4} {total:>8.2f} {outside:>8.2%}   "
        if pair:
            t_total, t_net, t_calls = min(theirs)
            overhead = min(r[0] - r[1] for r in ours) / min(r[0] - r[1] for r in theirs)
            row += (f"{type(pair[0]).__name__:<30} {t_calls:>4} {t_total:>8.2f} {1 - t_net / t_total:>8.2%} "
                    f"{total / t_total:>11.3f} {overhead:>13.3f}")
        else:
            row += f"{'-':<30}"
        print(row + (" (rtol = atol = 1e-2)" if name == "rk45" else ""), flush=True)
    print(f"\nlargest share of time outside network evaluations: {worst:.2%} (target < 2%)")


if __name__ == "__main__":
    run_script(main)
