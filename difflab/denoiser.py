"""The one interface the rest of difflab sees: D(x, sigma, cond) -> x0_hat in VE coordinates."""

from __future__ import annotations

import torch
from torch import nn

from difflab.conditioning import Condition
from difflab.prediction import Prediction, check_prediction, x0_from_output
from difflab.schedules import DiscreteSchedule, append_dims, vp_coefficients


class Denoiser(nn.Module):
    """Adapts a VP network net(x_t, timestep, cond) trained on a discrete schedule to D(x, sigma, cond).

    x is the VE-scaled input x_t / alpha_t and sigma [B] its level; the network sees
    x_t = c_in * x with c_in = 1/sqrt(1+sigma^2) and the timestep found from sigma in log space.
    """

    def __init__(self, net: nn.Module, schedule: DiscreteSchedule, prediction: Prediction = "eps",
                 learned_variance: bool | None = None):
        super().__init__()
        self.net = net
        self.schedule = schedule
        self.prediction = check_prediction(prediction)
        # whether net also outputs v; None: its config's learned_variance (give it for a wrapped network, e.g. DDP)
        self.learned_variance = bool(getattr(getattr(net, "config", None), "learned_variance", False)
                                     if learned_variance is None else learned_variance)

    @property
    def sigma_min(self) -> float:
        return self.schedule.sigma_min

    @property
    def sigma_max(self) -> float:
        return self.schedule.sigma_max

    def prior_std(self, sigma: float) -> float:
        """Std of the VE-scaled prior at level sigma: x_T ~ N(0, I) in VP coordinates is N(0, 1 + sigma^2) here."""
        return (1 + sigma**2) ** 0.5

    def split(self, output: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        """A network output -> (the prediction, the variance fraction v or None): a learned-variance network
        stacks [prediction, v] on the channel dimension (Nichol & Dhariwal 2021, Sec. 3.1)."""
        if not self.learned_variance:
            return output, None
        prediction, v = output.chunk(2, dim=1)
        return prediction, v

    def with_variance(
        self, x: torch.Tensor, sigma: torch.Tensor, cond: Condition | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """(x0_hat, v): v [B, C, ...] is the raw fraction of Sigma = exp(v log beta + (1 - v) log beta_tilde)
        (Nichol & Dhariwal 2021, Eq. 15), None for a fixed-variance model."""
        if sigma.ndim == 0:
            sigma = sigma.expand(x.shape[0])
        dtype = next(self.net.parameters()).dtype
        sigma_b = append_dims(sigma.to(x.dtype), x.ndim)
        c_in, _ = vp_coefficients(sigma_b)
        timestep = self.schedule.timestep_from_sigma(sigma)
        output, v = self.split(self.net((c_in * x).to(dtype), timestep.to(dtype), cond))
        x0_hat = x0_from_output(self.prediction, x, sigma_b, output.to(x.dtype))
        return x0_hat, None if v is None else v.to(x.dtype)

    def forward(self, x: torch.Tensor, sigma: torch.Tensor, cond: Condition | None = None) -> torch.Tensor:
        return self.with_variance(x, sigma, cond)[0]

