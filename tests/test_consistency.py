"""Consistency models: the boundary condition, the curricula, the CD/CT objective's target network, the sampler."""

from __future__ import annotations

import math

import pytest
import torch
from samplers_exact import GaussianDenoiser
from torch import nn

from difflab.denoiser import (
    ConsistencyConfig,
    Denoiser,
    EDMConfig,
    VPConfig,
    build_precond,
    precond_config,
)
from difflab.distill.consistency import (
    ConsistencyObjective,
    ConsistencyRecipe,
    distance,
    heun_step,
    levels_at,
    target_rate,
)
from difflab.errors import DifflabError
from difflab.samplers import SAMPLERS
from difflab.schedules import DiscreteSchedule


class Net(nn.Module):
    """A stand-in network F(x_in, c_noise): anything finite will do for the scalings."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(1, 1, 3, padding=1)

    def forward(self, x, c_noise, cond=None):
        return self.conv(x) * (1 + c_noise.view(-1, 1, 1, 1))


def consistency_denoiser(inner) -> Denoiser:
    config = ConsistencyConfig(sigma_min=0.002 if isinstance(inner, EDMConfig) else DiscreteSchedule().sigma_min,
                               inner=inner)
    return Denoiser(Net().double(), build_precond(config, DiscreteSchedule(), "eps"))


@pytest.mark.parametrize("inner", [VPConfig(), EDMConfig()])
def test_boundary_condition_is_exact_at_sigma_min(inner):
    """f(x, sigma_min) = x bit for bit: c_skip(sigma_min) = 1 and c_out(sigma_min) = 0 (Song et al. 2023, Eq. 5)."""
    denoiser = consistency_denoiser(inner)
    x = torch.randn(4, 1, 6, 6, dtype=torch.float64) * 3
    sigma_min = denoiser.precond.config.sigma_min
    assert torch.equal(denoiser(x, torch.full((4,), sigma_min, dtype=torch.float64)), x)
    assert not torch.equal(denoiser(x, torch.full((4,), 2 * sigma_min, dtype=torch.float64)), x)


@pytest.mark.parametrize("inner", [VPConfig(), EDMConfig()])
def test_far_from_the_boundary_it_is_the_inner_denoiser(inner):
    """The scalings differ from EDM's by O(sigma_min / sigma), so a student starts as its teacher's denoiser."""
    denoiser = consistency_denoiser(inner)
    plain = Denoiser(denoiser.net, build_precond(inner, DiscreteSchedule(), "eps"))
    x, sigma = torch.randn(2, 1, 6, 6, dtype=torch.float64), torch.full((2,), 20.0, dtype=torch.float64)
    with torch.no_grad():
            assert float((denoiser(x, sigma) - plain(x, sigma)).abs().max()) < 1e-2 * float(plain(x, sigma).abs().max())


def test_config_round_trips_and_rejects_nesting():
    config = ConsistencyConfig(sigma_min=0.01, inner=EDMConfig(sigma_data=0.6))
    assert precond_config({"kind": "consistency", "sigma_min": 0.01, "inner": {"kind": "edm", "sigma_data": 0.6}}) \
        == config
    with pytest.raises(DifflabError, match="inner of a consistency model must be vp or edm"):
        ConsistencyConfig(inner=config)


def test_curricula():
    ct = ConsistencyRecipe(curriculum="ct")
    # Song et al. 2023, App. C: N goes from s0 = 2 to s1 + 1 = 151; mu(k) = exp(s0 log mu0 / N(k))
    assert levels_at(ct, 0, 1000) == 2 and levels_at(ct, 1000, 1000) == 151
    assert [levels_at(ct, k, 1000) for k in range(0, 1001, 100)] == sorted(levels_at(ct, k, 1000)
                                                                          for k in range(0, 1001, 100))
    assert target_rate(ct, 3) == pytest.approx(math.exp(2 * math.log(0.9) / 3))
    # Song & Dhariwal 2023, Eq. 8: 10, 20, ..., 1280 (+1) in 8 equal stages, and no EMA target
    ict = ConsistencyRecipe(curriculum="ict", s0=10, s1=1280, mu=0.0)
    assert [levels_at(ict, k, 800) for k in range(0, 800, 100)] == [11, 21, 41, 81, 161, 321, 641, 1281]
    assert target_rate(ict, 11) == 0.0
    assert target_rate(ConsistencyRecipe(), 18) == 0.95


def test_pseudo_huber_and_l2():
    a, b = torch.zeros(2, 1, 4, 4), torch.ones(2, 1, 4, 4)
    c = 0.00054 * 4
    torch.testing.assert_close(distance(a, b, "pseudo_huber"), torch.full((2,), math.sqrt(16 + c**2) - c))
    torch.testing.assert_close(distance(a, b, "l2"), torch.full((2,), 16.0))


def test_heun_step_is_second_order_on_the_gaussian_pf_ode():
    teacher = GaussianDenoiser(0.2, 0.3)
    x = torch.randn(3, 1, 2, 2, dtype=torch.float64) * 5
    errors = []
    for h in (1.0, 0.5, 0.25):
        t_from, t_to = torch.full((3,), 5.0, dtype=torch.float64), torch.full((3,), 5.0 - h, dtype=torch.float64)
        exact = teacher.mu + (x - teacher.mu) * math.sqrt(0.3 + (5 - h) ** 2) / math.sqrt(0.3 + 25)
        errors.append(float((heun_step(teacher, x, t_from, t_to) - exact).abs().max()))
    assert errors[0] / errors[1] > 6 and errors[1] / errors[2] > 6  # local error O(h^3)


def test_target_network_is_an_ema_of_the_student_and_part_of_the_state():
    student = consistency_denoiser(EDMConfig())
    objective = ConsistencyObjective(student, ConsistencyRecipe(mu=0.9), 10)
    x0, generator = torch.zeros(2, 1, 6, 6, dtype=torch.float64), torch.Generator().manual_seed(0)
    objective.draw(None, x0, None, generator)  # step 0: theta- = theta
    before = objective.target.conv.weight.clone()
    with torch.no_grad():
        student.net.conv.weight.add_(1.0)
    objective.draw(None, x0, None, generator)  # theta- <- 0.9 theta- + 0.1 theta
    torch.testing.assert_close(objective.target.conv.weight, before + 0.1)
    state = objective.state()
    fresh = ConsistencyObjective(consistency_denoiser(EDMConfig()), ConsistencyRecipe(mu=0.9), 10)
    fresh.load_state(state)
    assert fresh.k == 2 and torch.equal(fresh.target.conv.weight, objective.target.conv.weight)
    assert ConsistencyObjective(student, ConsistencyRecipe(curriculum="ict", mu=0.0), 10).target is None


class ExactConsistency:
    """The consistency function of x0 ~ N(mu, s^2): f(x, t) = mu + (x - mu) sqrt(s^2 + eps^2) / sqrt(s^2 + t^2)."""

    def __init__(self, mu: float, s2: float, eps: float):
        self.mu, self.s2, self.eps = mu, s2, eps

    def __call__(self, x, sigma):
        t = sigma.view(-1, *[1] * (x.ndim - 1))
        return self.mu + (x - self.mu) * math.sqrt(self.s2 + self.eps**2) / torch.sqrt(self.s2 + t**2)


@pytest.mark.parametrize("levels", [[80.0, 0.0], [80.0, 1.0, 0.0], [80.0, 2.0, 0.5, 0.0]])
def test_consistency_sampler_with_the_exact_function_draws_the_data(levels):
    """One step, or re-noised multistep, from x_T ~ N(mu, s^2 + T^2): samples ~ N(mu, s^2 + eps^2)."""
    mu, s2, eps, n = 0.3, 0.25, 0.002, 40_000
    x = mu + math.sqrt(s2 + 80.0**2) * torch.randn(n, 1, 1, 1, generator=torch.Generator().manual_seed(1),
                                                   dtype=torch.float64)
    out = SAMPLERS["consistency"].fn(ExactConsistency(mu, s2, eps), x, torch.tensor(levels, dtype=torch.float64),
                                     generator=torch.Generator().manual_seed(2))
    assert abs(float(out.mean()) - mu) < 0.01
    assert abs(float(out.var()) - (s2 + eps**2)) < 0.01
