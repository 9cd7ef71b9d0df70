"""Closed-form pieces of the variational bound: Gaussian KL, Gaussian log-density and the discretized decoder.

All in nats per element (no reduction) and in float64 where the caller passes float64.
"""

from __future__ import annotations

import math

import torch

BINS = 256  # 8-bit data scaled to [-1, 1]: bin centres k/127.5 - 1, bin width 2/255
HALF_BIN = 1.0 / 255.0
EDGE = 1.0 - HALF_BIN / 2  # |x| above this is the first or last bin (improved-diffusion uses 0.999)


def normal_kl(mean1: torch.Tensor, log_var1: torch.Tensor, mean2: torch.Tensor, log_var2: torch.Tensor) -> torch.Tensor:
    """KL(N(mean1, e^log_var1) || N(mean2, e^log_var2)) per element (diagonal Gaussians), in nats."""
    # KL = 1/2 (log s2^2/s1^2 + s1^2/s2^2 + (m1 - m2)^2 / s2^2 - 1)  (Ho et al. 2020, Eq. 5 terms, closed form)
    return 0.5 * (log_var2 - log_var1 + torch.exp(log_var1 - log_var2)
                  + (mean1 - mean2) ** 2 * torch.exp(-log_var2) - 1)


def gaussian_log_density(x: torch.Tensor, mean: torch.Tensor, log_var: torch.Tensor) -> torch.Tensor:
    """log N(x; mean, e^log_var) per element, in nats: the continuous-data decoder log p(x0 | x1)."""
    # log N = -1/2 (log 2 pi + log s^2 + (x - m)^2 / s^2)
    return -0.5 * (math.log(2 * math.pi) + log_var + (x - mean) ** 2 * torch.exp(-log_var))


def log_normal_cdf_difference(lower: torch.Tensor, upper: torch.Tensor) -> torch.Tensor:
    """log(Phi(upper) - Phi(lower)) for lower < upper, stable in both tails (exact erf-based Phi, not a tanh fit).

    Where lower > 0 the symmetric form Phi(-lower) - Phi(-upper) avoids cancelling two numbers close to 1.
    """
    flip = lower > 0
    a = torch.where(flip, -upper, lower)
    b = torch.where(flip, -lower, upper)
    log_b = torch.special.log_ndtr(b)
    # log(Phi(b) - Phi(a)) = log Phi(b) + log(1 - Phi(a)/Phi(b))
    return log_b + torch.log(-torch.expm1(torch.special.log_ndtr(a) - log_b))


def discretized_gaussian_log_likelihood(x: torch.Tensor, mean: torch.Tensor, log_scale: torch.Tensor) -> torch.Tensor:
    """log P(x) of 8-bit data x in [-1, 1] under N(mean, e^(2 log_scale)) integrated over x's bin (nats per element).

    Ho et al. 2020, Eq. 13: the bin is [x - 1/255, x + 1/255], widened to (-inf, .] at x = -1 and [., inf) at
    x = 1, so the 256 bin probabilities sum to 1. The normal CDF is the exact one (torch.special.log_ndtr).
    """
    inv_scale = torch.exp(-log_scale)
    lower = (x - mean - HALF_BIN) * inv_scale
    upper = (x - mean + HALF_BIN) * inv_scale
    lower = torch.where(x < -EDGE, torch.full_like(lower, -math.inf), lower)
    upper = torch.where(x > EDGE, torch.full_like(upper, math.inf), upper)
    return log_normal_cdf_difference(lower, upper)
