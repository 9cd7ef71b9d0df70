"""-log p(x) by the probability-flow ODE with Hutchinson's trace estimator, and uniform dequantization of 8-bit data.

In VE coordinates the PF-ODE is dx/dlog(sigma) = x - D(x, sigma) (Karras et al. 2022, Eq. 4), and by the
instantaneous change of variables (Chen et al. 2018, Thm. 1; Song et al. 2021, Eq. 39)
    log p(x; sigma_min) = log p(x(sigma_max); sigma_max) + int_{log sigma_min}^{log sigma_max} div(x - D) dlog(sigma),
with div(x - D) = dims - tr(dD/dx). The trace is Hutchinson's z^T (dD/dx) z for a probe z fixed per sample.
"""

from __future__ import annotations

import math
from typing import Literal

import torch
from tqdm import tqdm

from difflab.likelihood.gaussian import HALF_BIN
from difflab.samplers.adaptive import A, C, E

Probe = Literal["rademacher", "gaussian"]
PROBES: tuple[Probe, ...] = ("rademacher", "gaussian")


def hutchinson_probe(shape: tuple[int, ...], kind: Probe, generator: torch.Generator | None,
                     dtype: torch.dtype = torch.float64, device=None) -> torch.Tensor:
    """z with E[z z^T] = I: Rademacher +-1 (the lower-variance choice, Hutchinson 1990) or standard normal."""
    if kind == "rademacher":
        return torch.randint(0, 2, shape, generator=generator, device=device).to(dtype) * 2 - 1
    return torch.randn(shape, generator=generator, dtype=dtype, device=device)


def pf_ode_dynamics(denoiser, x: torch.Tensor, sigma: float, probe: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(dx/dlog sigma [B, ...], div estimate [B]) at one level: x - D(x, sigma) and dims - z^T (dD/dx) z."""
    with torch.enable_grad():
        x_in = x.detach().requires_grad_(True)
        x0_hat = denoiser(x_in, torch.full((x.shape[0],), sigma, dtype=x.dtype, device=x.device))
        (vjp,) = torch.autograd.grad(x0_hat, x_in, probe)  # z^T dD/dx
    # Hutchinson 1990: tr(dD/dx) = E_z[z^T (dD/dx) z]
    trace = (vjp * probe).flatten(1).sum(1)
    return (x - x0_hat).detach(), x[0].numel() - trace.detach()


def prior_log_density(x: torch.Tensor, sigma_max: float) -> torch.Tensor:
    """log p(x; sigma_max) [B] of the VE-scaled prior: x_T = alpha x ~ N(0, I) in VP coordinates, alpha = 1/sqrt(1 +
    sigma_max^2), and the change of variables x = x_T / alpha adds dims * log(alpha)."""
    log_alpha = -0.5 * math.log1p(sigma_max**2)
    x_T = x.flatten(1) * math.exp(log_alpha)
    return (-0.5 * x_T**2 - 0.5 * math.log(2 * math.pi)).sum(1) + x_T.shape[1] * log_alpha


def _error_norm(error: torch.Tensor, old: torch.Tensor, new: torch.Tensor, dims: int, rtol: float,
                atol: float) -> torch.Tensor:
    """Largest scaled error over the batch: RMS over x's entries, and the log-density change on its own."""
    scaled = (error / (atol + rtol * torch.maximum(old.abs(), new.abs())))
    return torch.maximum(scaled[:, :dims].pow(2).mean(1).sqrt(), scaled[:, dims].abs()).max()


def ode_nll(
    denoiser, x: torch.Tensor, *, sigma_min: float, sigma_max: float, generator: torch.Generator | None = None,
    probe: Probe = "rademacher", rtol: float = 1e-5, atol: float = 1e-5, progress: bool = False,
) -> tuple[torch.Tensor, int]:
    """(-log p(x; sigma_min) per sample [B] in nats, network evaluations) for data x read as the ODE state at sigma_min.

    Integrates [x, delta] from log sigma_min up to log sigma_max by Dormand-Prince RK5(4) with one step size for the
    batch (accepted when every sample's scaled error is <= 1; Hairer et al., II.4). `denoiser` is D(x, sigma).
    """
    batch, dims = x.shape[0], x[0].numel()
    z = hutchinson_probe(tuple(x.shape), probe, generator, torch.float64, x.device)

    def f(state: torch.Tensor, log_sigma: float) -> torch.Tensor:
        dx, div = pf_ode_dynamics(denoiser, state[:, :dims].view(x.shape), math.exp(log_sigma), z)
        return torch.cat([dx.flatten(1), div[:, None]], dim=1)

    state = torch.cat([x.to(torch.float64).flatten(1), x.new_zeros(batch, 1, dtype=torch.float64)], dim=1)
    s, s_end = math.log(sigma_min), math.log(sigma_max)
    k1, nfe, h = f(state, s), 1, 0.01 * (s_end - s)
    bar = tqdm(total=s_end - s, desc="PF-ODE", disable=not progress, leave=False,
               bar_format="{l_bar}{bar}| log sigma +{n:.2f}/{total:.2f} [{elapsed}<{remaining}]")
    while s < s_end:
        h = min(h, s_end - s)
        ks = [k1]
        for stage in range(1, 7):
            stage_state = state + h * sum(a * k for a, k in zip(A[stage], ks) if a != 0.0)
            ks.append(f(stage_state, s + C[stage] * h))
        nfe += 6
        error = h * sum(e * k for e, k in zip(E, ks) if e != 0.0)
        err = float(_error_norm(error, state, stage_state, dims, rtol, atol))
        if err <= 1:  # the 7th stage was evaluated at the 5th-order solution (FSAL)
            state, k1, s = stage_state, ks[6], s + h
            bar.update(h)
        # Hairer et al., II.4 Eq. 4.13: h_new = h * min(5, max(0.2, 0.9 err^(-1/5)))
        h *= min(5.0, max(0.2, 0.9 * max(err, 1e-10) ** -0.2))
        if h < 1e-8:
            raise RuntimeError("ode_nll: step size underflow (non-finite or too stiff model output)")
    bar.close()
    log_p = prior_log_density(state[:, :dims], sigma_max) + state[:, dims]
    return -log_p, nfe


def dequantize(x0: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
    """8-bit data x0 = u/127.5 - 1 spread uniformly over its bin: x0 + (w - 1/2) 2/255, w ~ U[0, 1) (float64).

    On the 0..255 scale y = 127.5 (x + 1) + 1/2 = u + w (Theis et al. 2016, uniform dequantization)."""
    w = torch.rand(x0.shape, generator=generator, dtype=torch.float64, device=x0.device)
    return x0.to(torch.float64) + (2 * w - 1) * HALF_BIN


def dequantized_bits_per_dim(nll: torch.Tensor, dims: int) -> torch.Tensor:
    """Bits per 8-bit dimension from -log p(x) in the [-1, 1] scaling: y = 127.5 (x + 1) + 1/2 gives
    -log p_y = -log p_x + dims * log 127.5, and E_w[-log p_y(u + w)] >= -log P(u) (Theis et al. 2016, Eq. 11)."""
    return (nll / dims + math.log(127.5)) / math.log(2)
