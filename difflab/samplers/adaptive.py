"""The probability-flow ODE solved by an adaptive Dormand-Prince RK5(4) with per-sample step-size control."""

from __future__ import annotations

import torch

from difflab.samplers import register
from difflab.samplers.common import Callback, Generator, report, sigma_batch
from difflab.schedules import append_dims

# Dormand & Prince 1980, Table 2: nodes c, stages a, 5th-order weights b (= the last stage row, FSAL) and the
# error weights b - b_hat against the embedded 4th-order solution
C = (0.0, 1 / 5, 3 / 10, 4 / 5, 8 / 9, 1.0, 1.0)
A = (
    (),
    (1 / 5,),
    (3 / 40, 9 / 40),
    (44 / 45, -56 / 15, 32 / 9),
    (19372 / 6561, -25360 / 2187, 64448 / 6561, -212 / 729),
    (9017 / 3168, -355 / 33, 46732 / 5247, 49 / 176, -5103 / 18656),
    (35 / 384, 0.0, 500 / 1113, 125 / 192, -2187 / 6784, 11 / 84),
)
E = (71 / 57600, 0.0, -71 / 16695, 71 / 1920, -17253 / 339200, 22 / 525, -1 / 40)


def _rms(x: torch.Tensor) -> torch.Tensor:
    return x.flatten(1).pow(2).mean(1).sqrt()


@register("rk45", order=5, stochastic=False, nfe_per_step=6)
@torch.no_grad()
def sample_rk45(
    denoiser, x: torch.Tensor, sigmas: torch.Tensor, *, generator: Generator = None, callback: Callback = None,
    rtol: float = 1e-4, atol: float = 1e-4,
) -> torch.Tensor:
    """Probability-flow ODE (Song et al. 2021, Eq. 13) by adaptive Dormand-Prince RK45 in log sigma.

    dx/dlog(sigma) = x - D(x, sigma) (Karras et al. 2022, Eq. 4 in VE coordinates). Each sample has its own step
    size, accepted when the RMS of err / (atol + rtol |x|) is <= 1 (Hairer et al., II.4). The grid's positive
    levels are the output levels the integration stops at and reports; the last step, to sigma = 0, is
    x0_hat = D(x, sigma_min). The callback's StepInfo.nfe counts network evaluations (6 per attempted step).
    """
    log_sigmas = sigmas[:-1].log().to(x.dtype)
    s = log_sigmas[0].expand(x.shape[0]).clone()  # per-sample log sigma
    f = lambda x, s: x - denoiser(x, s.exp())  # noqa: E731
    k1 = f(x, s)
    nfe = 1
    scale = atol + rtol * x.abs()
    d0, d1 = _rms(x / scale), _rms(k1 / scale)
    # Hairer et al., II.4, initial step: h0 = 0.01 ||x|| / ||f||, integrating towards smaller sigma
    h = -torch.where((d0 < 1e-5) | (d1 < 1e-5), torch.full_like(d0, 1e-6), 0.01 * d0 / d1)
    for i in range(len(log_sigmas) - 1):
        s_end = log_sigmas[i + 1]
        while bool((s > s_end).any()):
            active = s > s_end
            h_step = torch.maximum(h, s_end - s)  # never past the output level; 0 once a sample is there
            ks = [k1]
            for stage in range(1, 7):
                x_stage = x + append_dims(h_step, x.ndim) * sum(a * k for a, k in zip(A[stage], ks) if a != 0.0)
                ks.append(f(x_stage, s + C[stage] * h_step))
            nfe += 6
            x_new = x_stage  # the 7th stage is evaluated at the 5th-order solution (FSAL)
            error = append_dims(h_step, x.ndim) * sum(e * k for e, k in zip(E, ks) if e != 0.0)
            err = _rms(error / (atol + rtol * torch.maximum(x.abs(), x_new.abs())))
            accept = (err <= 1) | ~active
            mask = append_dims(accept, x.ndim)
            x, k1 = torch.where(mask, x_new, x), torch.where(mask, ks[6], k1)
            reached = accept & (h_step == s_end - s)
            s = torch.where(reached, s_end, torch.where(accept, s + h_step, s))
            # Hairer et al., II.4 Eq. 4.13: h_new = h * min(5, max(0.2, 0.9 err^(-1/5))); keep h after a truncated step
            factor = (0.9 * err.clamp_min(1e-10) ** -0.2).clamp(0.2, 5.0)
            h = torch.where(active & ~(reached & (h_step > h)), h_step * factor, h)
            if bool((active & (h.abs() < 1e-10)).any()):
                raise RuntimeError("rk45: step size underflow (non-finite or too stiff model output)")
        report(callback, i, sigmas, x, x - k1, nfe)
    x0_hat = denoiser(x, sigma_batch(sigmas[-2], x))
    report(callback, len(sigmas) - 2, sigmas, x, x0_hat, nfe + 1)
    return x0_hat
