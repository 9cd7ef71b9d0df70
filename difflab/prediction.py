"""What a network predicts (eps, x0 or v) and the exact conversions, in VE coordinates.

x = x0 + sigma * eps is the VE-scaled noisy input (x = x_t / alpha_t) and sigma its level; the VP pair is
alpha = 1/sqrt(1+sigma^2), sigma_vp = sigma * alpha. Velocity: v = alpha * eps - sigma_vp * x0.
"""

from __future__ import annotations

from typing import Literal

import torch

from difflab.errors import DifflabError

Prediction = Literal["eps", "x0", "v"]
PREDICTIONS: tuple[Prediction, ...] = ("eps", "x0", "v")


def check_prediction(prediction: str) -> Prediction:
    if prediction not in PREDICTIONS:
        raise DifflabError(f"prediction must be one of {', '.join(PREDICTIONS)}, got {prediction!r}")
    return prediction  # type: ignore[return-value]


def x0_from_eps(x: torch.Tensor, sigma: torch.Tensor, eps: torch.Tensor) -> torch.Tensor:
    # x0 = x - sigma * eps  (Ho et al. 2020, Eq. 4 divided by alpha)
    return x - sigma * eps


def eps_from_x0(x: torch.Tensor, sigma: torch.Tensor, x0: torch.Tensor) -> torch.Tensor:
    # eps = (x - x0) / sigma
    return (x - x0) / sigma


def x0_from_v(x: torch.Tensor, sigma: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    # x0 = alpha * x_t - sigma_vp * v = (x - sigma * sqrt(1+sigma^2) * v) / (1 + sigma^2)  (Salimans & Ho 2022, Sec. 4)
    return (x - sigma * torch.sqrt(1 + sigma**2) * v) / (1 + sigma**2)


def v_from_x0_eps(sigma: torch.Tensor, x0: torch.Tensor, eps: torch.Tensor) -> torch.Tensor:
    # v = alpha * eps - sigma_vp * x0 = (eps - sigma * x0) / sqrt(1 + sigma^2)
    return (eps - sigma * x0) / torch.sqrt(1 + sigma**2)


def score_from_x0(x: torch.Tensor, sigma: torch.Tensor, x0: torch.Tensor) -> torch.Tensor:
    # grad_x log p(x; sigma) = (x0_hat - x) / sigma^2  (Tweedie's formula, EDM Eq. 3)
    return (x0 - x) / sigma**2


def x0_from_output(prediction: Prediction, x: torch.Tensor, sigma: torch.Tensor, output: torch.Tensor) -> torch.Tensor:
    """The clean estimate x0_hat from a network output of the given prediction type."""
    if prediction == "eps":
        return x0_from_eps(x, sigma, output)
    if prediction == "x0":
        return output
    return x0_from_v(x, sigma, output)


def training_target(prediction: Prediction, sigma: torch.Tensor, x0: torch.Tensor, eps: torch.Tensor) -> torch.Tensor:
    """The regression target for a network of the given prediction type."""
    if prediction == "eps":
        return eps
    if prediction == "x0":
        return x0
    return v_from_x0_eps(sigma, x0, eps)
