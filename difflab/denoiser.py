"""The one interface the rest of difflab sees: D(x, sigma, cond) -> x0_hat in VE coordinates."""

from __future__ import annotations

import torch
from torch import nn

from difflab.prediction import Prediction, check_prediction, x0_from_output
from difflab.schedules import DiscreteSchedule, append_dims, vp_coefficients


class Denoiser(nn.Module):
    """Adapts a VP network net(x_t, timestep, cond) trained on a discrete schedule to D(x, sigma, cond).

    x is the VE-scaled input x_t / alpha_t and sigma [B] its level; the network sees
    x_t = c_in * x with c_in = 1/sqrt(1+sigma^2) and the timestep found from sigma in log space.
    """

    def __init__(self, net: nn.Module, schedule: DiscreteSchedule, prediction: Prediction = "eps"):
        super().__init__()
        self.net = net
        self.schedule = schedule
        self.prediction = check_prediction(prediction)

    @property
    def sigma_min(self) -> float:
        return self.schedule.sigma_min

    @property
    def sigma_max(self) -> float:
        return self.schedule.sigma_max

    def prior_std(self, sigma: float) -> float:
        """Std of the VE-scaled prior at level sigma: x_T ~ N(0, I) in VP coordinates is N(0, 1 + sigma^2) here."""
        return (1 + sigma**2) ** 0.5

    def forward(self, x: torch.Tensor, sigma: torch.Tensor, cond: torch.Tensor | None = None) -> torch.Tensor:
        if sigma.ndim == 0:
            sigma = sigma.expand(x.shape[0])
        dtype = next(self.net.parameters()).dtype
        sigma_b = append_dims(sigma.to(x.dtype), x.ndim)
        c_in, _ = vp_coefficients(sigma_b)
        timestep = self.schedule.timestep_from_sigma(sigma)
        output = self.net((c_in * x).to(dtype), timestep.to(dtype), cond)
        return x0_from_output(self.prediction, x, sigma_b, output.to(x.dtype))
