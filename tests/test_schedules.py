import pytest
import torch

from difflab.grids import make_grid
from difflab.samplers.ancestral import sample_ddpm
from difflab.schedules import DiscreteSchedule, ScheduleConfig, vp_coefficients

KINDS = ["linear", "cosine", "sigmoid", "scaled_linear"]


@pytest.mark.parametrize("kind", KINDS)
def test_tables_are_consistent(kind):
    s = DiscreteSchedule(ScheduleConfig(kind=kind, timesteps=1000,
                                        **({"beta_start": 0.00085, "beta_end": 0.012} if kind == "scaled_linear" else {})))
    assert s.alpha_bar.dtype == torch.float64
    assert bool((s.alpha_bar[1:] < s.alpha_bar[:-1]).all()) and 0 < float(s.alpha_bar[-1]) < float(s.alpha_bar[0]) < 1
    assert torch.allclose(s.alpha**2 + s.sigma_vp**2, torch.ones_like(s.alpha), atol=1e-12)
    assert torch.allclose(s.sigmas, s.sigma_vp / s.alpha)
    assert torch.allclose(s.log_snr, -2 * s.sigmas.log())
    alpha, sigma_vp = vp_coefficients(s.sigmas)
    assert torch.allclose(alpha, s.alpha) and torch.allclose(sigma_vp, s.sigma_vp)


def test_linear_schedule_matches_ho_et_al():
    s = DiscreteSchedule()
    assert float(s.betas[0]) == pytest.approx(1e-4) and float(s.betas[-1]) == pytest.approx(0.02)
    # alpha_bar_T for the linear schedule is about 4.04e-5 (a near-pure-noise prior)
    assert float(s.alpha_bar[-1]) == pytest.approx(4.04e-5, rel=0.01)


def test_cosine_schedule_closed_form():
    s = DiscreteSchedule(ScheduleConfig(kind="cosine", timesteps=1000))
    t = torch.tensor([100, 500, 900])
    f = lambda u: torch.cos((u / 1000 + 0.008) / 1.008 * torch.pi / 2) ** 2  # noqa: E731
    expected = f(t.double() + 1) / f(torch.zeros(1, dtype=torch.float64))
    assert torch.allclose(s.alpha_bar[t], expected, rtol=1e-9)


def test_q_sample_moments_match_closed_form():
    s = DiscreteSchedule()
    g = torch.Generator().manual_seed(0)
    x0 = torch.full((200_000,), 0.7, dtype=torch.float64)
    for t in (0, 250, 999):
        x_t = s.q_sample(x0, torch.full_like(x0, t, dtype=torch.long), torch.randn(x0.shape, generator=g, dtype=torch.float64))
        assert float(x_t.mean()) == pytest.approx(0.7 * float(s.alpha[t]), abs=4 * float(s.sigma_vp[t]) / 447)
        assert float(x_t.var()) == pytest.approx(1 - float(s.alpha_bar[t]), rel=0.02)


def test_posterior_matches_bayes_on_gaussians():
    # q(x_{t-1}|x0) = N(sqrt(ab_{t-1}) x0, 1 - ab_{t-1}), q(x_t|x_{t-1}) = N(sqrt(1-beta_t) x_{t-1}, beta_t):
    # the posterior precision is the sum of precisions, the mean the precision-weighted sum.
    s = DiscreteSchedule()
    t = torch.arange(1, 1000)
    prior_var = 1 - s.alpha_bar_prev[t]
    lik_precision = (1 - s.betas[t]) / s.betas[t]
    var = 1 / (1 / prior_var + lik_precision)
    c_x0 = var * s.alpha_bar_prev[t].sqrt() / prior_var
    c_xt = var * (1 - s.betas[t]).sqrt() / s.betas[t]
    assert torch.allclose(s.beta_tilde[t], var, rtol=1e-9)
    assert torch.allclose(s.posterior_c_x0[t], c_x0, rtol=1e-9)
    assert torch.allclose(s.posterior_c_xt[t], c_xt, rtol=1e-9)


class FixedX0(torch.nn.Module):
    def __init__(self, x0):
        super().__init__()
        self.x0 = x0

    def forward(self, x, sigma):
        return self.x0.expand_as(x)


@pytest.mark.parametrize("variance", ["beta_tilde", "beta"])
@pytest.mark.parametrize("t", [1, 500, 999])
def test_ddpm_step_in_ve_coordinates_is_the_posterior(t, variance):
    """One DDPM step from x_t (VE-scaled) equals q(x_{t-1}|x_t, x0) of Ho et al. Eq. 7 after scaling back."""
    s = DiscreteSchedule()
    n = 100_000
    x_t_vp = torch.full((n, 1), -0.4, dtype=torch.float64)
    step = torch.stack([s.sigmas[t], s.sigmas[t - 1]])  # one step of the chain, t -> t-1
    out = sample_ddpm(FixedX0(torch.tensor([0.3], dtype=torch.float64)), x_t_vp / s.alpha[t], step,
                      generator=torch.Generator().manual_seed(1), variance=variance)
    x_prev_vp = out * s.alpha[t - 1]
    mean = s.posterior_c_x0[t] * 0.3 + s.posterior_c_xt[t] * -0.4
    var = s.beta_tilde[t] if variance == "beta_tilde" else s.betas[t]
    assert float(x_prev_vp.mean()) == pytest.approx(float(mean), abs=5 * float(var.sqrt()) / n**0.5)
    assert float(x_prev_vp.var()) == pytest.approx(float(var), rel=0.02)


def test_timestep_from_sigma_inverts_the_table():
    s = DiscreteSchedule(ScheduleConfig(kind="cosine"))
    t = torch.tensor([0, 1, 17, 500, 998, 999])
    assert torch.allclose(s.timestep_from_sigma(s.sigmas[t]), t.double(), atol=1e-9)
    mid = (s.log_sigmas[10] + s.log_sigmas[11]) / 2
    assert float(s.timestep_from_sigma(mid.exp()[None])) == pytest.approx(10.5, abs=1e-9)


def test_grids_are_descending_and_end_in_zero():
    s = DiscreteSchedule()
    for kind in ("linspace", "leading", "trailing", "karras"):
        for n in (1, 7, 50):
            g = make_grid(s, n, kind)
            assert len(g) == n + 1 and float(g[-1]) == 0 and bool((g[1:] < g[:-1]).all())
    assert torch.equal(make_grid(s, 1000, "trailing")[:-1], s.sigmas.flip(0))
