"""The likelihood module against closed forms: Gaussian KL, the discretized decoder, and on Gaussian data with the
exact denoiser the variational bound and the probability-flow ODE against the exact negative log-likelihood."""

import math

import pytest
import torch

from difflab.denoiser import Denoiser, VPPrecond
from difflab.likelihood.gaussian import discretized_gaussian_log_likelihood, gaussian_log_density, normal_kl
from difflab.likelihood.ode import dequantize, dequantized_bits_per_dim, ode_nll
from difflab.likelihood.vlb import bits_per_dim, variance_bounds, vlb_nll
from difflab.objectives import vlb_loss
from difflab.schedules import DiscreteSchedule
from samplers_exact import GaussianDenoiser

MU, S2 = 0.3, 0.25  # data N(MU, S2) per coordinate


def gaussian_nll(x: torch.Tensor, mean, var) -> torch.Tensor:
    """-log N(x; mean, var I) per sample, in nats (var a scalar)."""
    return (0.5 * math.log(2 * math.pi * var) + (x - mean) ** 2 / (2 * var)).flatten(1).sum(1)


def test_normal_kl_of_identical_gaussians_is_zero():
    g = torch.Generator().manual_seed(0)
    mean, log_var = (torch.randn(100, generator=g, dtype=torch.float64) for _ in range(2))
    assert float(normal_kl(mean, log_var, mean, log_var).abs().max()) < 1e-15


def test_normal_kl_matches_a_monte_carlo_estimate():
    m1, lv1, m2, lv2 = (torch.tensor(v, dtype=torch.float64) for v in (0.3, -1.0, -0.5, 0.4))
    x = m1 + (0.5 * lv1).exp() * torch.randn(400_000, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    log_ratio = gaussian_log_density(x, m1, lv1) - gaussian_log_density(x, m2, lv2)  # KL = E_q1[log q1 - log q2]
    se = float(log_ratio.std()) / math.sqrt(len(x))
    assert float(normal_kl(m1, lv1, m2, lv2)) == pytest.approx(float(log_ratio.mean()), abs=4 * se)


@pytest.mark.parametrize("mean,scale", [(0.0, 0.5), (0.98, 0.01), (-1.3, 0.2), (0.2, 1e-4), (0.5, 30.0)])
def test_discretized_decoder_probabilities_over_256_bins_sum_to_one(mean, scale):
    bins = torch.arange(256, dtype=torch.float64) / 127.5 - 1
    log_p = discretized_gaussian_log_likelihood(bins, torch.tensor(mean, dtype=torch.float64),
                                                torch.tensor(math.log(scale), dtype=torch.float64))
    assert float(log_p.exp().sum()) == pytest.approx(1.0, abs=1e-9)
    k = int(torch.argmin((bins - mean).abs()))  # an interior bin: Phi(x + 1/255) - Phi(x - 1/255) by erf
    if 0 < k < 255:
        cdf = lambda z: 0.5 * (1 + math.erf((z - mean) / (scale * math.sqrt(2))))  # noqa: E731
        assert float(log_p[k].exp()) == pytest.approx(cdf(bins[k] + 1 / 255) - cdf(bins[k] - 1 / 255), rel=1e-9)


def test_discretized_decoder_gradients_are_finite_at_the_edge_bins():
    x = torch.tensor([-1.0, -1 + 2 / 255, 0.0, 1.0], dtype=torch.float64)
    mean = torch.zeros(4, dtype=torch.float64, requires_grad=True)
    log_scale = torch.full((4,), -2.0, dtype=torch.float64, requires_grad=True)
    discretized_gaussian_log_likelihood(x, mean, log_scale).sum().backward()
    assert bool(torch.isfinite(mean.grad).all() and torch.isfinite(log_scale.grad).all())


class ExactChain(GaussianDenoiser):
    """D(x, sigma) for data N(MU, S2) iid, and optionally the v whose Sigma_t (Nichol & Dhariwal Eq. 15) is the true
    reverse variance Var[x_{t-1} | x_t] = beta_tilde_t + c_x0^2 Var[x0 | x_t] of the full chain (at t = 0 the decoder
    variance Var[x0 | x_1-level])."""

    def __init__(self, schedule: DiscreteSchedule, learned: bool):
        super().__init__(MU, S2)
        self.schedule, self.learned = schedule, learned

    def with_variance(self, x, sigma):
        if not self.learned:
            return self(x, sigma), None
        s = self.schedule
        t = s.timestep_from_sigma(sigma).round().long()
        log_beta, log_beta_tilde = variance_bounds(s)
        var = s.beta_tilde[t] + s.posterior_c_x0[t] ** 2 * posterior_variance(sigma.double())
        v = (var.log() - log_beta_tilde[t]) / (log_beta[t] - log_beta_tilde[t])
        return self(x, sigma), v.view(-1, *[1] * (x.ndim - 1)).expand_as(x)


def posterior_variance(sigma):
    # Var[x0 | x] for x = x0 + sigma eps, x0 ~ N(MU, S2): S2 sigma^2 / (S2 + sigma^2)
    return S2 * sigma**2 / (S2 + sigma**2)


def expected_vlb_per_dim(schedule: DiscreteSchedule, learned: bool) -> float:
    """E[L_T + sum L_t + L_0] per coordinate in closed form: every mean error c_x0 (x0 - E[x0|x_t]) has
    E[.^2] = c_x0^2 Var[x0 | x_t], and Sigma_t is beta_tilde_t (fixed, clipped at t = 0) or the true reverse
    variance."""
    s = schedule
    V = posterior_variance(s.sigmas)
    _, log_beta_tilde = variance_bounds(s)
    true_var = s.beta_tilde + s.posterior_c_x0**2 * V
    sigma2 = true_var if learned else log_beta_tilde.exp()
    kl = 0.5 * (sigma2.log() - log_beta_tilde + s.beta_tilde / sigma2 + s.posterior_c_x0**2 * V / sigma2 - 1)
    decoder = 0.5 * (math.log(2 * math.pi) + sigma2[0].log() + V[0] / sigma2[0])
    a = float(s.alpha_bar[-1])
    prior = 0.5 * (a * (MU**2 + S2) - a - math.log1p(-a))
    return float(kl[1:].sum() + decoder) + prior


@pytest.mark.parametrize("learned", [True, False])
def test_vlb_on_gaussian_data_bounds_the_exact_nll(learned):
    """T = 1000, continuous data: L_0 is the Gaussian decoder's log-density. With the true reverse variance the bound
    is the NLL (up to the prior mismatch, ~1e-5); with beta_tilde it lies above it, by its closed-form gap."""
    schedule = DiscreteSchedule()
    n, d = 1000, 8
    x0 = MU + math.sqrt(S2) * torch.randn(n, d, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    nll = vlb_nll(ExactChain(schedule, learned), schedule, x0, generator=torch.Generator().manual_seed(1),
                  decoder="gaussian") / d
    exact_nll = 0.5 * math.log(2 * math.pi * math.e * S2)  # E[-log N(x0; MU, S2)] per coordinate
    expected = expected_vlb_per_dim(schedule, learned)
    se = float(nll.std()) / math.sqrt(n)
    assert se < 0.03
    assert float(nll.mean()) == pytest.approx(expected, abs=4 * se)
    if learned:
        assert expected == pytest.approx(exact_nll, abs=1e-4)
    else:
        assert 0.3 < expected - exact_nll < 1.0  # measured 0.58 nats/dim, mostly from the first steps


def test_ode_nll_of_isotropic_gaussian_data_is_exact_per_sample():
    """Rademacher probes make Hutchinson exact for a Jacobian proportional to I: -log N(x; 0, S2 + sigma_min^2).

    Centred data, as the prior N(0, 1 + sigma_max^2) then differs from the true p(x; sigma_max) = N(0, S2 +
    sigma_max^2) by ~1e-5 nats per coordinate (with mean MU it would be off by MU x / sigma_max^2 ~ 2e-3)."""
    schedule = DiscreteSchedule()
    x = math.sqrt(S2) * torch.randn(64, 8, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    nll, nfe = ode_nll(GaussianDenoiser(0.0, S2), x, sigma_min=schedule.sigma_min, sigma_max=schedule.sigma_max,
                       generator=torch.Generator().manual_seed(3))
    expected = gaussian_nll(x, 0.0, S2 + schedule.sigma_min**2)
    assert float((nll - expected).abs().max()) < 1e-3 and nfe < 400  # measured 1.2e-4 nats at 151 NFE
    data_nll = 8 * 0.5 * math.log(2 * math.pi * math.e * S2)
    assert float(nll.mean()) == pytest.approx(data_nll, abs=4 * float(nll.std()) / 8)


@pytest.mark.parametrize("probe", ["rademacher", "gaussian"])
def test_ode_nll_of_correlated_gaussian_data_is_unbiased(probe):
    """A full covariance: Hutchinson is noisy per sample, its mean over samples is exact within error bars."""
    g = torch.Generator().manual_seed(4)
    q = torch.linalg.qr(torch.randn(4, 4, generator=g, dtype=torch.float64))[0]
    cov = q @ torch.diag(torch.tensor([0.05, 0.2, 0.5, 1.0], dtype=torch.float64)) @ q.T
    mu = torch.tensor([0.1, -0.2, 0.3, 0.0], dtype=torch.float64)
    exact = GaussianDenoiser(mu, cov)
    x = exact.sample(256, g)
    schedule = DiscreteSchedule()
    nll, _ = ode_nll(exact, x, sigma_min=schedule.sigma_min, sigma_max=schedule.sigma_max, generator=g, probe=probe)
    noisy_cov = cov + schedule.sigma_min**2 * torch.eye(4, dtype=torch.float64)
    marginal = torch.distributions.MultivariateNormal(mu, noisy_cov)
    error = nll + marginal.log_prob(x)
    assert float(error.std()) > 1e-3  # the probe does add noise here
    assert abs(float(error.mean())) < 4 * float(error.std()) / math.sqrt(len(x))


def test_dequantized_ode_bits_per_dim_match_the_discrete_nll():
    """8-bit data under the model N(0, s^2 + sigma_min^2): the dequantized PF-ODE bits/dim equal the discrete bits/dim
    of the same density integrated over the 2/255 bins (the Jensen gap is ~1e-5 bits for so smooth a density).
    s = 0.25 keeps the data off the edge bins, whose discrete mass includes the tails."""
    schedule = DiscreteSchedule()
    g = torch.Generator().manual_seed(5)
    s2 = 0.0625
    u = (127.5 * (math.sqrt(s2) * torch.randn(200, 4, generator=g, dtype=torch.float64) + 1)).round().clamp(0, 255)
    x0 = u / 127.5 - 1
    assert 0 < float(u.min()) and float(u.max()) < 255
    nll, _ = ode_nll(GaussianDenoiser(0.0, s2), dequantize(x0, g), sigma_min=schedule.sigma_min,
                     sigma_max=schedule.sigma_max, generator=g)
    ode_bpd = dequantized_bits_per_dim(nll, 4)
    log_scale = torch.tensor(0.5 * math.log(s2 + schedule.sigma_min**2), dtype=torch.float64)
    discrete_bpd = bits_per_dim(-discretized_gaussian_log_likelihood(x0, torch.tensor(0.0), log_scale).sum(1), 4)
    difference = ode_bpd - discrete_bpd
    assert abs(float(difference.mean())) < max(4 * float(difference.std()) / math.sqrt(200), 1e-3)
    assert float(difference.abs().max()) < 0.05  # per sample: the density's slope over the bin, averaging to 0


def test_dequantized_bits_per_dim_of_the_uniform_density_is_8():
    # p_x uniform on the 256 bins' span [-1 - 1/255, 1 + 1/255] (width 512/255): p_y uniform on [0, 256)
    nll = torch.tensor([3 * math.log(512 / 255)], dtype=torch.float64)
    assert float(dequantized_bits_per_dim(nll, 3)) == pytest.approx(8.0, abs=1e-12)


class ExactEps(torch.nn.Module):
    """The eps-network of data N(MU, S2): eps_hat = (x - E[x0 | x]) / sigma in VE coordinates x = x_t / alpha_t."""

    def __init__(self, schedule: DiscreteSchedule):
        super().__init__()
        self.schedule = schedule
        self.dtype_anchor = torch.nn.Parameter(torch.zeros((), dtype=torch.float64))

    def forward(self, x_t, timestep, cond=None):
        sigma = self.schedule.sigmas[timestep.round().long()].view(-1, *[1] * (x_t.ndim - 1))
        x = x_t * torch.sqrt(1 + sigma**2)
        return (x - (MU + S2 / (S2 + sigma**2) * (x - MU))) / sigma


def test_training_estimate_of_l_vlb_matches_the_closed_form():
    """vlb_loss (T * L_t in bits/dim) averaged per t and summed over t equals sum_{t<T} L_t, the closed form without
    L_T. Stratified over t, with more draws for the first steps, whose terms vary most."""
    schedule = DiscreteSchedule()
    T, d = schedule.timesteps, 16
    t = torch.arange(T)
    draws = torch.where(t < 10, 2000, torch.where(t < 100, 200, 10))  # Var(L_t) falls about as 1/t^2
    timestep = torch.repeat_interleave(torch.arange(T), draws)
    g = torch.Generator().manual_seed(6)
    x0 = MU + math.sqrt(S2) * torch.randn(len(timestep), d, generator=g, dtype=torch.float64)
    eps = torch.randn(x0.shape, generator=g, dtype=torch.float64)
    L_t = vlb_loss(Denoiser(ExactEps(schedule), VPPrecond(schedule, "eps")), x0, noise=(timestep, eps), decoder="gaussian") / T
    mean = torch.zeros(T, dtype=torch.float64).index_add_(0, timestep, L_t) / draws
    second = torch.zeros(T, dtype=torch.float64).index_add_(0, timestep, L_t**2) / draws
    se = float(((second - mean**2) / (draws - 1)).sum().sqrt())
    a = float(schedule.alpha_bar[-1])
    prior = 0.5 * (a * (MU**2 + S2) - a - math.log1p(-a))
    expected_bits = (expected_vlb_per_dim(schedule, learned=False) - prior) / math.log(2)
    assert se < 0.03
    assert float(mean.sum()) == pytest.approx(expected_bits, abs=4 * se)
