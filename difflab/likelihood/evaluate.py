"""Bits per dimension of 8-bit images under a model, by the variational bound or by the probability-flow ODE."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import torch
from tqdm import tqdm

from difflab.denoiser import Denoiser
from difflab.errors import DifflabError
from difflab.guidance import ConditionedDenoiser
from difflab.likelihood.ode import Probe, dequantize, dequantized_bits_per_dim, ode_nll
from difflab.likelihood.vlb import bits_per_dim, vlb_nll

Method = Literal["vlb", "ode"]
METHODS: tuple[Method, ...] = ("vlb", "ode")


@dataclass(frozen=True)
class NLLResult:
    bits_per_dim: torch.Tensor  # [N], one value per image
    nfe: float  # network evaluations per image: T for the bound, the ODE solver's (per batch) averaged over images

    @property
    def mean(self) -> float:
        return float(self.bits_per_dim.mean())

    @property
    def standard_error(self) -> float:
        """std / sqrt(N): the error bar of the mean over images (for the ODE it includes the Hutchinson and
        dequantization noise, as each image has its own draws)."""
        n = len(self.bits_per_dim)
        return float(self.bits_per_dim.std() / math.sqrt(n)) if n > 1 else math.nan


def images_bits_per_dim(
    denoiser: Denoiser, images: torch.Tensor, *, method: Method = "vlb", batch: int = 64, seed: int = 0,
    probe: Probe = "rademacher", rtol: float = 1e-5, atol: float = 1e-5, progress: bool = False,
) -> NLLResult:
    """-log p per image in bits/dim for images [N, C, H, W] in [-1, 1] (8-bit values k/127.5 - 1), unconditionally.

    vlb: the full T-step bound with the discretized decoder and x0_hat clipped to [-1, 1] (Ho et al. 2020, Eq. 5);
    ode: uniform dequantization, then the PF-ODE from sigma_min to sigma_max with a Hutchinson probe per image.
    Batch b draws from seed + b.
    """
    if denoiser.precond.kind != "vp":
        raise DifflabError("likelihoods are computed for VP models (a discrete schedule and its N(0, I) prior); "
                           f"this model's preconditioning is {denoiser.precond.kind}")
    device = next(denoiser.parameters()).device
    sampler_denoiser = ConditionedDenoiser(denoiser, None)
    dims = images[0].numel()
    out, nfe = [], 0
    starts = range(0, len(images), batch)
    for b, start in enumerate(tqdm(starts, desc=f"NLL ({method})", unit="batch", disable=not progress)):
        x0 = images[start: start + batch].to(device, torch.float64)
        generator = torch.Generator(device).manual_seed(seed + b)
        if method == "vlb":
            nll = vlb_nll(sampler_denoiser, denoiser.schedule, x0, generator=generator, clip=True, progress=progress)
            out.append(bits_per_dim(nll, dims).cpu())
            nfe += denoiser.schedule.timesteps * len(x0)
        else:
            x = dequantize(x0, generator)
            nll, calls = ode_nll(sampler_denoiser, x, sigma_min=denoiser.sigma_min, sigma_max=denoiser.sigma_max,
                                 generator=generator, probe=probe, rtol=rtol, atol=atol, progress=progress)
            out.append(dequantized_bits_per_dim(nll, dims).cpu())
            nfe += calls * len(x0)
    return NLLResult(torch.cat(out), nfe / len(images))
