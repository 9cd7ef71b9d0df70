import pytest
import torch

from difflab.denoiser import Denoiser, VPPrecond
from difflab.prediction import (
    eps_from_x0, score_from_x0, training_target, v_from_x0_eps, x0_from_eps, x0_from_output, x0_from_v,
)
from difflab.schedules import DiscreteSchedule, ScheduleConfig


def _batch():
    g = torch.Generator().manual_seed(0)
    x0 = torch.randn(16, 3, generator=g, dtype=torch.float64)
    eps = torch.randn(16, 3, generator=g, dtype=torch.float64)
    sigma = torch.logspace(-2, 2, 16, dtype=torch.float64)[:, None]
    return x0, eps, sigma, x0 + sigma * eps


def test_conversions_round_trip():
    x0, eps, sigma, x = _batch()
    assert torch.allclose(x0_from_eps(x, sigma, eps), x0, atol=1e-10)
    assert torch.allclose(eps_from_x0(x, sigma, x0), eps, atol=1e-10)
    v = v_from_x0_eps(sigma, x0, eps)
    assert torch.allclose(x0_from_v(x, sigma, v), x0, atol=1e-10)
    for prediction in ("eps", "x0", "v"):
        target = training_target(prediction, sigma, x0, eps)
        assert torch.allclose(x0_from_output(prediction, x, sigma, target), x0, atol=1e-10)


def test_v_matches_vp_definition():
    # Salimans & Ho 2022: v = alpha eps - sigma_vp x0 with alpha = 1/sqrt(1+sigma^2), sigma_vp = sigma alpha
    x0, eps, sigma, _ = _batch()
    alpha = 1 / torch.sqrt(1 + sigma**2)
    assert torch.allclose(v_from_x0_eps(sigma, x0, eps), alpha * eps - sigma * alpha * x0, atol=1e-12)


def test_score_is_tweedie_on_gaussian_data():
    # data N(0, 1): D(x, sigma) = x / (1 + sigma^2); the exact score of N(0, 1 + sigma^2) is -x / (1 + sigma^2)
    _, _, sigma, x = _batch()
    x0_hat = x / (1 + sigma**2)
    assert torch.allclose(score_from_x0(x, sigma, x0_hat), -x / (1 + sigma**2), atol=1e-12)


class Oracle(torch.nn.Module):
    """A 'network' that returns the exact target for known (x0, eps), checking what the denoiser feeds it."""

    def __init__(self, schedule, prediction, x0, eps):
        super().__init__()
        self.schedule, self.prediction, self.x0, self.eps = schedule, prediction, x0, eps
        self.dummy = torch.nn.Parameter(torch.zeros((), dtype=torch.float64))

    def forward(self, x_t, timestep, cond=None):
        t = timestep.round().long()
        assert torch.allclose(timestep, t.double(), atol=1e-6)
        expected = self.schedule.q_sample(self.x0, t, self.eps)  # the denoiser must feed VP inputs
        assert torch.allclose(x_t, expected, atol=1e-9)
        sigma = self.schedule.sigmas[t][:, None]
        return training_target(self.prediction, sigma, self.x0, self.eps)


@pytest.mark.parametrize("prediction", ["eps", "x0", "v"])
def test_denoiser_recovers_x0_for_each_prediction_type(prediction):
    schedule = DiscreteSchedule(ScheduleConfig(kind="cosine"))
    x0, eps, _, _ = _batch()
    t = torch.linspace(0, 999, 16).long()
    sigma = schedule.sigmas[t]
    denoiser = Denoiser(Oracle(schedule, prediction, x0, eps), VPPrecond(schedule, prediction))
    x = x0 + sigma[:, None] * eps
    assert torch.allclose(denoiser(x, sigma), x0, atol=1e-7)
