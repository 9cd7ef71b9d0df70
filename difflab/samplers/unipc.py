"""UniPC (Zhao et al. 2023): a multistep predictor UniP-p and a corrector UniC-p that reuses the network evaluation
the next step makes anyway, so order p + 1 at one evaluation per step; data prediction, in VE coordinates
(difflab.samplers.dpm_solver: x = x_t / alpha_t, sigma = sigma_t / alpha_t, h = log(sigma / sigma_next)).

Both are the exponential integrator x' = (sigma' / sigma) x - phi_1 x0_hat - B(h) sum_k rho_k D1_k (Eq. 7 and 8
divided by alpha'), with phi_1 = e^{-h} - 1, D1_k = (x0_hat_k - x0_hat) / r_k the divided differences of earlier
(or, in the corrector, the new) data predictions at lambda_k = lambda + r_k h, and rho solving the order
conditions R rho = g (Eq. 9): R_ij = r_j^(i-1), g_i = (-h) phi_(i+1)(-h) i! / B(h). B(h) is -h ("bh1") or
e^{-h} - 1 ("bh2"). As in the paper's code (and diffusers), UniP-2 and UniC-1 take rho = 1/2 instead of solving, so
UniP-2 with bh2 is DPM-Solver++(2M); the step to sigma = 0 is first order (x = x0_hat) and is not corrected.
"""

from __future__ import annotations

import math

import torch

from difflab.errors import DifflabError
from difflab.samplers import register
from difflab.samplers.common import Callback, Generator, report, sigma_batch

ORDERS = (1, 2, 3)  # of the predictor
SOLVER_TYPES = ("bh1", "bh2")


def order_rhs(h: torch.Tensor, order: int, solver_type: str) -> tuple[torch.Tensor, torch.Tensor]:
    """B(h) and g_1..g_order of the order conditions (Eq. 9), in the data-prediction sign (hh = -h)."""
    hh = -h
    b_h = hh if solver_type == "bh1" else torch.expm1(hh)  # B(h): bh1 = h, bh2 = e^h - 1
    h_phi = torch.expm1(hh) / hh - 1  # hh phi_2(hh)
    g = []
    for i in range(1, order + 1):
        g.append(h_phi * math.factorial(i) / b_h)  # g_i = hh phi_(i+1)(hh) i! / B(h)
        h_phi = h_phi / hh - 1 / math.factorial(i + 1)  # hh phi_(i+2)(hh) = phi_(i+1)(hh) - 1 / (i+1)!
    return b_h, torch.stack(g)


def unipc_update(x: torch.Tensor, sigma, sigma_next, x0_hats: list[torch.Tensor], sigmas_of: list[torch.Tensor],
                 order: int, solver_type: str, x0_next: torch.Tensor | None = None) -> torch.Tensor:
    """UniP-order from x at sigma (x0_hats[-1] evaluated there, earlier ones at sigmas_of), or with `x0_next` (the
    evaluation at the predicted point) UniC-order, the corrected x at sigma_next."""
    h = torch.log(sigma / sigma_next)
    x0 = x0_hats[-1]
    # r_k = (lambda_k - lambda) / h for the earlier predictions, newest first
    rks = [torch.log(sigma / sigmas_of[-1 - k]) / h for k in range(1, order)]
    d1s = [(x0_hats[-1 - k] - x0) / r for k, r in enumerate(rks, start=1)]  # D1_k = (x0_k - x0) / r_k
    b_h, g = order_rhs(h, order, solver_type)
    linear = (sigma_next / sigma) * x - torch.expm1(-h) * x0  # the first-order (DDIM) step
    if x0_next is not None:  # UniC: the new prediction is one more difference, at r = 1
        rks, d1s = [*rks, torch.ones_like(h)], [*d1s, x0_next - x0]
        rhos = torch.full((1,), 0.5, dtype=h.dtype) if order == 1 else torch.linalg.solve(vandermonde(rks), g)
    elif not d1s:
        return linear
    else:
        rhos = torch.full((1,), 0.5, dtype=h.dtype) if order == 2 else torch.linalg.solve(vandermonde(rks), g[:-1])
    return linear - b_h * sum(rho.to(x.dtype) * d1 for rho, d1 in zip(rhos, d1s))


def vandermonde(rks: list[torch.Tensor]) -> torch.Tensor:
    """R_ij = r_j^(i-1)."""
    r = torch.stack(rks)
    return torch.stack([r**i for i in range(len(rks))])


@register("unipc", order=3, stochastic=False, nfe_per_step=1)
@torch.no_grad()
def sample_unipc(
    denoiser, x: torch.Tensor, sigmas: torch.Tensor, *, generator: Generator = None, callback: Callback = None,
    order: int = 2, solver_type: str = "bh2",
) -> torch.Tensor:
    """UniPC multistep predictor-corrector, data prediction (Zhao et al. 2023; order p + 1 at one evaluation per step).

    order (p, default 2): of the predictor, warmed up from 1 and lowered on the last steps as DPM-Solver++'s;
    solver_type: B(h) = h ("bh1") or e^h - 1 ("bh2", default)."""
    if order not in ORDERS or solver_type not in SOLVER_TYPES:
        raise DifflabError(f"unipc takes order 1, 2 or 3 and solver_type bh1 or bh2, got {order} and {solver_type!r}")
    steps = len(sigmas) - 1
    x0_hats: list[torch.Tensor] = []
    sigmas_of: list[torch.Tensor] = []
    last = None  # the previous predictor's start and order, for the corrector
    for i in range(steps):
        sigma, sigma_next = sigmas[i], sigmas[i + 1]
        x0_hat = denoiser(x, sigma_batch(sigma, x))
        if last is not None:  # UniC with the evaluation just made at the predicted x (which stays its x0_hat)
            x = unipc_update(last[0], sigmas[i - 1], sigma, x0_hats, sigmas_of, last[1], solver_type, x0_hat)
        report(callback, i, sigmas, x, x0_hat)
        x0_hats, sigmas_of = (x0_hats + [x0_hat])[-order:], (sigmas_of + [sigma])[-order:]
        if sigma_next == 0:
            return x0_hat  # the h -> inf limit of every order
        step_order = min(order, len(x0_hats), steps - i)
        last = (x, step_order)
        x = unipc_update(x, sigma, sigma_next, x0_hats, sigmas_of, step_order, solver_type)
    return x
