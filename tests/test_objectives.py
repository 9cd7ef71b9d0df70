import pytest
import torch

from difflab.denoiser import Denoiser, VPPrecond
from difflab.objectives import min_snr_weight, simple_loss
from difflab.prediction import training_target
from difflab.schedules import DiscreteSchedule


class Zero(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.p = torch.nn.Parameter(torch.zeros(()))

    def forward(self, x_t, timestep, cond=None):
        return torch.zeros_like(x_t)


class Exact(torch.nn.Module):
    """Knows x0 and recovers the target exactly from x_t: a perfect network for one fixed x0."""

    def __init__(self, schedule, prediction, x0):
        super().__init__()
        self.schedule, self.prediction, self.x0 = schedule, prediction, x0
        self.p = torch.nn.Parameter(torch.zeros(()))

    def forward(self, x_t, timestep, cond=None):
        t = timestep.long()
        alpha, sigma_vp = self.schedule.alpha[t][:, None].float(), self.schedule.sigma_vp[t][:, None].float()
        eps = (x_t - alpha * self.x0) / sigma_vp
        return training_target(self.prediction, self.schedule.sigmas[t][:, None].float(), self.x0, eps)


@pytest.mark.parametrize("prediction", ["eps", "x0", "v"])
def test_simple_loss_is_zero_for_the_exact_network(prediction):
    schedule = DiscreteSchedule()
    x0 = torch.randn(64, 3)
    loss = simple_loss(Denoiser(Exact(schedule, prediction, x0), VPPrecond(schedule, prediction)), x0,
                       generator=torch.Generator().manual_seed(0))
    assert loss.shape == (64,) and float(loss.max()) < 1e-6


def test_simple_loss_of_a_zero_eps_network_is_the_noise_power():
    schedule = DiscreteSchedule()
    loss = simple_loss(Denoiser(Zero(), VPPrecond(schedule, "eps")), torch.randn(20_000, 4), generator=torch.Generator().manual_seed(0))
    assert float(loss.mean()) == pytest.approx(1.0, abs=0.02)  # E||eps||^2 / d = 1


def test_min_snr_weights():
    snr = torch.tensor([0.1, 1.0, 5.0, 100.0], dtype=torch.float64)
    assert torch.allclose(min_snr_weight(snr, 5.0, "x0"), torch.tensor([0.1, 1.0, 5.0, 5.0], dtype=torch.float64))
    assert torch.allclose(min_snr_weight(snr, 5.0, "eps"), torch.tensor([1.0, 1.0, 1.0, 0.05], dtype=torch.float64))
    assert torch.allclose(min_snr_weight(snr, 5.0, "v"), torch.tensor([0.1 / 1.1, 0.5, 5 / 6, 5 / 101], dtype=torch.float64))


def test_min_snr_loss_downweights_low_noise_eps_losses():
    schedule = DiscreteSchedule()
    x0 = torch.randn(4096, 2)
    plain = simple_loss(Denoiser(Zero(), VPPrecond(schedule, "eps")), x0, generator=torch.Generator().manual_seed(1))
    weighted = simple_loss(Denoiser(Zero(), VPPrecond(schedule, "eps")), x0, generator=torch.Generator().manual_seed(1),
                           min_snr_gamma=5.0)
    assert bool((weighted <= plain + 1e-6).all()) and int((weighted < 0.5 * plain).sum()) > 100
