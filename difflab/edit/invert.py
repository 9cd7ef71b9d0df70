"""DDIM inversion: the deterministic DDIM sampler run backwards, from an image x0 to the noise at the grid's noisiest
level that DDIM (eta 0) on the same grid maps back to it (Song et al. 2021, Sec. 4.3; Dhariwal & Nichol 2021, App. F).

A DDIM step from level b down to a is x_a = x_b + (sigma_a - sigma_b) eps(x_b, sigma_b) in VE coordinates, with
eps(x, sigma) = (x - D(x, sigma)) / sigma. Its exact inverse needs eps at the unknown x_b; inversion takes it at the
known point, x_b = x_a + (sigma_b - sigma_a) eps(x_a, sigma_a) (Dhariwal & Nichol's Eq. 13 in VE coordinates; the first
step, from sigma = 0, takes eps at sigma_1), an O(h^2) error per step, so reconstruction error falls with steps.
(Taking eps at (x_a, sigma_b), as diffusers' DDIMInverseScheduler does with the VP latent, is worse here: in VE
coordinates the network would see x_a scaled for level b, wrong by sigma_a / sigma_b at high noise.) `fixed_point`
iterations x_b <- x_a + (sigma_b - sigma_a) eps(x_b, sigma_b) solve the step's exact inverse (Pan et al. 2023, AIDI;
Garibi et al. 2024, ReNoise), at one more evaluation each.

Under strong classifier-free guidance the guided eps changes fast along x and inversion drifts (Mokady et al. 2023,
Sec. 3); the usual remedy is to invert unguided (w = 0) and to guide only the edit; fixed-point iterations help too.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load as load_bytes
from safetensors.torch import save as save_bytes

from difflab.errors import DifflabError
from difflab.images import atomic_write
from difflab.pipelines.generate import NO_GUIDANCE
from difflab.pipelines.request import Plan
from difflab.precision import autocast
from difflab.samplers.common import Callback, StepInfo, sigma_batch

NOISE_KEY = "noise"
METADATA_KEY = "difflab_inversion"


@torch.no_grad()
def ddim_invert(denoiser, x0: torch.Tensor, sigmas: torch.Tensor, fixed_point: int = 0,
                callback: Callback = None) -> torch.Tensor:
    """x at sigmas[0] from x0 at sigma = 0, up the descending grid `sigmas` (ending in 0) in reverse; `denoiser` is
    sampler-facing, D(x, sigma). `fixed_point` iterations per step solve the DDIM step's exact inverse."""
    levels = sigmas.flip(0).to(x0.dtype)
    x = x0
    for i in range(len(levels) - 1):
        sigma, sigma_next = levels[i], levels[i + 1]
        at = sigma if sigma > 0 else sigma_next  # eps at sigma = 0 is 0/0: the first step takes it at sigma_1
        x0_hat = denoiser(x, sigma_batch(at, x))
        x_next = x + (sigma_next - sigma) * (x - x0_hat) / at  # x_b = x_a + (sigma_b - sigma_a) eps(x_a, sigma_a)
        for _ in range(fixed_point):
            # the DDIM step down from x_b: x_a = x_b + (sigma_a - sigma_b) eps(x_b, sigma_b), solved for x_b
            x0_hat = denoiser(x_next, sigma_batch(sigma_next, x))
            x_next = x + (sigma_next - sigma) * (x_next - x0_hat) / sigma_next
        x = x_next
        if callback is not None:
            callback(StepInfo(i, float(sigma), float(sigma_next), x, x0_hat))
    return x


@dataclass(frozen=True)
class Inversion:
    """What an inversion was made with, so reconstruction runs DDIM on the same grid: the model's steps and grid,
    the condition (class label and/or prompt) and the guidance weight w it was inverted under."""

    steps: int
    grid: str
    sections: str | None
    label: int | None
    prompt: str | None
    cfg: float | None
    model: str


def invert(plan: Plan, x0: torch.Tensor, fixed_point: int = 0, callback=None) -> torch.Tensor:
    """The noise [n, *shape] that DDIM with `plan`'s grid, condition and guidance maps to x0 [n, *shape] (in the
    sampler's space: encoded, for a latent model), inverted batch by batch with `fixed_point` iterations a step."""
    request = plan.request
    if len(x0) != request.n:
        raise DifflabError(f"inversion of {len(x0)} images needs a plan of n = {len(x0)} samples, got {request.n}")
    device = next(plan.denoiser.parameters()).device
    sigmas = plan.grid().to(device)
    guidance = plan.guidance or NO_GUIDANCE
    out = []
    for b, first in enumerate(range(0, request.n, request.batch)):
        last = min(first + request.batch, request.n)
        cond = None if plan.cond is None else plan.cond[first:last].to(device)
        negative = guidance.negative_rows(first, last)
        guided = guidance.wrap(plan.denoiser, cond, None if negative is None else negative.to(device))
        step = None if callback is None else (lambda info, b=b: callback(b, info))
        with autocast(device, request.precision):
            out.append(ddim_invert(guided, x0[first:last].to(device, torch.float64), sigmas, fixed_point, step).cpu())
    return torch.cat(out)


def from_noise(plan: Plan, noise: torch.Tensor) -> Plan:
    """`plan` (DDIM, eta 0) started from inverted `noise` [n, *shape] at its grid's noisiest level."""
    request = plan.request
    top = float(plan.grid()[0])
    return replace(plan, request=replace(request, start=noise, sigma_start=top, start_noised=True))


def save_noise(path: str | Path, noise: torch.Tensor, inversion: Inversion) -> None:
    """The inverted noise [n, *shape] (float64) and how it was made, as one safetensors file, written atomically."""
    data = save_bytes({NOISE_KEY: noise.double().contiguous()}, metadata={METADATA_KEY: json.dumps(asdict(inversion))})
    atomic_write(path, lambda f: f.write(data))


def load_noise(path: str | Path) -> tuple[torch.Tensor, Inversion]:
    try:
        raw = Path(path).read_bytes()
        tensors = load_bytes(raw)
        header_size = int.from_bytes(raw[:8], "little")
        metadata = json.loads(raw[8: 8 + header_size]).get("__metadata__", {})
        inversion = Inversion(**json.loads(metadata[METADATA_KEY]))
    except (OSError, SafetensorError, KeyError, TypeError, ValueError) as err:
        raise DifflabError(f"{path}: not a noise file written by `difflab edit invert` ({err})") from None
    return tensors[NOISE_KEY], inversion
