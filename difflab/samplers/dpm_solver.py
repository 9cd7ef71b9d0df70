"""DPM-Solver 1/2/3 (single-step, noise prediction; Lu et al. 2022a) and DPM-Solver++ 2S (and k-diffusion's
ancestral 2S), 2M, 3M and SDE-DPM-Solver++(2M) and (3M) (data prediction; Lu et al. 2022b), in VE coordinates.

With x = x_t / alpha_t and sigma = sigma_t / alpha_t = exp(-lambda), where lambda is the half log-SNR, the
exponential integrators lose their alpha factors: h = lambda_next - lambda = log(sigma / sigma_next).
The step to sigma = 0 (h = inf) is always first order, x = x0_hat: the lower-order final step.
"""

from __future__ import annotations

from functools import partial

import torch

from difflab.samplers import register
from difflab.samplers.common import Callback, Generator, add_noise, ancestral, report, sigma_batch


def _eps(denoiser, x: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
    # eps_hat = (x - D(x, sigma)) / sigma
    return (x - denoiser(x, sigma_batch(sigma, x))) / sigma.to(x.dtype)


def dpm_solver_step(denoiser, x, eps_s, sigma, sigma_next, order: int) -> torch.Tensor:
    """One single-step DPM-Solver-k update with noise prediction (Lu et al. 2022a, Alg. 4 and 5 divided by alpha_t)."""
    h = torch.log(sigma / sigma_next)
    phi_1 = torch.expm1(h)
    if order == 1:
        return x - sigma_next * phi_1 * eps_s  # Eq. 3.7: DPM-Solver-1 = DDIM
    if order == 2:
        # Alg. 4, r1 = 1/2: u at lambda + h/2, then the full step with eps at u
        sigma_mid = sigma * torch.exp(-h / 2)
        u = x - sigma_mid * torch.expm1(h / 2) * eps_s
        return x - sigma_next * phi_1 * _eps(denoiser, u, sigma_mid)
    # Alg. 5, r1 = 1/3, r2 = 2/3
    r1, r2 = 1 / 3, 2 / 3
    sigma_1, sigma_2 = sigma * torch.exp(-r1 * h), sigma * torch.exp(-r2 * h)
    u1 = x - sigma_1 * torch.expm1(r1 * h) * eps_s
    d1 = _eps(denoiser, u1, sigma_1) - eps_s
    phi_22 = torch.expm1(r2 * h) / (r2 * h) - 1
    u2 = x - sigma_2 * torch.expm1(r2 * h) * eps_s - (r2 / r1) * sigma_2 * phi_22 * d1
    d2 = _eps(denoiser, u2, sigma_2) - eps_s
    phi_2 = phi_1 / h - 1
    return x - sigma_next * phi_1 * eps_s - (1 / r2) * sigma_next * phi_2 * d2


def _dpm_solver(denoiser, x, sigmas, callback, order: int) -> torch.Tensor:
    for i in range(len(sigmas) - 1):
        sigma, sigma_next = sigmas[i], sigmas[i + 1]
        x0_hat = denoiser(x, sigma_batch(sigma, x))
        report(callback, i, sigmas, x, x0_hat)
        if sigma_next == 0:
            x = x0_hat  # the h -> inf limit of every order
        else:
            x = dpm_solver_step(denoiser, x, (x - x0_hat) / sigma.to(x.dtype), sigma, sigma_next, order)
    return x


@register("dpm_solver_1", order=1, stochastic=False, nfe_per_step=1)
@torch.no_grad()
def sample_dpm_solver_1(
    denoiser, x: torch.Tensor, sigmas: torch.Tensor, *, generator: Generator = None, callback: Callback = None,
) -> torch.Tensor:
    """DPM-Solver-1 (Lu et al. 2022a, Eq. 3.7); the same update as DDIM(eta=0)."""
    return _dpm_solver(denoiser, x, sigmas, callback, 1)


@register("dpm_solver_2", order=2, stochastic=False, nfe_per_step=2)
@torch.no_grad()
def sample_dpm_solver_2(
    denoiser, x: torch.Tensor, sigmas: torch.Tensor, *, generator: Generator = None, callback: Callback = None,
) -> torch.Tensor:
    """DPM-Solver-2, single-step (Lu et al. 2022a, Alg. 4 with r1 = 1/2)."""
    return _dpm_solver(denoiser, x, sigmas, callback, 2)


@register("dpm_solver_3", order=3, stochastic=False, nfe_per_step=3)
@torch.no_grad()
def sample_dpm_solver_3(
    denoiser, x: torch.Tensor, sigmas: torch.Tensor, *, generator: Generator = None, callback: Callback = None,
) -> torch.Tensor:
    """DPM-Solver-3, single-step (Lu et al. 2022a, Alg. 5 with r1 = 1/3, r2 = 2/3)."""
    return _dpm_solver(denoiser, x, sigmas, callback, 3)


@register("dpmpp_2s", order=2, stochastic=False, nfe_per_step=2)
@torch.no_grad()
def sample_dpmpp_2s(
    denoiser, x: torch.Tensor, sigmas: torch.Tensor, *, generator: Generator = None, callback: Callback = None,
) -> torch.Tensor:
    """DPM-Solver++(2S), single-step with data prediction (Lu et al. 2022b, Alg. 1 with r = 1/2)."""
    for i in range(len(sigmas) - 1):
        sigma, sigma_next = sigmas[i], sigmas[i + 1]
        x0_hat = denoiser(x, sigma_batch(sigma, x))
        report(callback, i, sigmas, x, x0_hat)
        x = x0_hat if sigma_next == 0 else dpmpp_2s_step(denoiser, x, x0_hat, sigma, sigma_next)
    return x


def dpmpp_2s_step(denoiser, x: torch.Tensor, x0_hat: torch.Tensor, sigma, sigma_next) -> torch.Tensor:
    """One DPM-Solver++(2S) step from x at sigma (x0_hat evaluated there) to sigma_next > 0."""
    h = torch.log(sigma / sigma_next)
    sigma_mid = sigma * torch.exp(-h / 2)
    # Alg. 1: u = (sigma_s1 / sigma_s) x - alpha_s1 (e^{-r h} - 1) x0_hat, then D = x0(u) for r = 1/2
    u = (sigma_mid / sigma) * x - torch.expm1(-h / 2) * x0_hat
    return (sigma_next / sigma) * x - torch.expm1(-h) * denoiser(u, sigma_batch(sigma_mid, x))


@register("dpmpp_2s_ancestral", order=1, stochastic=True, nfe_per_step=2)
@torch.no_grad()
def sample_dpmpp_2s_ancestral(
    denoiser, x: torch.Tensor, sigmas: torch.Tensor, *, generator: Generator = None, callback: Callback = None,
    eta: float = 1.0, s_noise: float = 1.0,
) -> torch.Tensor:
    """DPM-Solver++(2S) ancestral (k-diffusion): a 2S step to sigma_down, then fresh noise of std sigma_up."""
    return ancestral(denoiser, x, sigmas, generator, callback, eta, s_noise, partial(dpmpp_2s_step, denoiser))


def multistep_update(
    x: torch.Tensor, sigma, sigma_next, x0_hats: list[torch.Tensor], hs: list[torch.Tensor], order: int,
) -> torch.Tensor:
    """One DPM-Solver++ multistep update of the given order from the last `order` data predictions.

    x0_hats[-1] is at sigma, x0_hats[-2] one step earlier; hs[-1] is the previous step's h (Lu et al. 2022b).
    """
    h = torch.log(sigma / sigma_next)
    phi_1 = torch.expm1(-h)
    linear = (sigma_next / sigma) * x - phi_1 * x0_hats[-1]  # Eq. 5 with D = x0_hat: first order
    if order == 1:
        return linear
    d1_0 = (x0_hats[-1] - x0_hats[-2]) * (h / hs[-1])  # (x0_i - x0_{i-1}) / r0, r0 = h_prev / h
    if order == 2:
        return linear - 0.5 * phi_1 * d1_0  # Alg. 2: D = (1 + 1/(2r)) x0_i - 1/(2r) x0_{i-1}
    # third order: Taylor terms h^(k+1) phi_(k+1)(-h) d^k x0/dlambda^k (Lu et al. 2022a, Eq. 3.6, data prediction)
    r0, r1 = hs[-1] / h, hs[-2] / h
    d1_1 = (x0_hats[-2] - x0_hats[-3]) / r1
    # d2 ~ h^2 x0''. The released DPM-Solver code and diffusers omit the 2 (weighting x0'' by half, which makes
    # their 3M second order); their single-step "taylor" update has it: D2 = 2 (D1_1 - D1_0) / (r2 - r1)
    d2 = 2 * (d1_0 - d1_1) / (r0 + r1)
    d1 = d1_0 + (r0 / 2) * d2  # ~ h x0' at lambda (d1_0 is centred half a previous step earlier)
    phi_2 = phi_1 / h + 1  # phi_1 = -h phi_1(-h), phi_2 = h phi_2(-h), phi_3 = -h phi_3(-h) in the usual phi_k(z)
    phi_3 = phi_2 / h - 0.5
    return linear + phi_2 * d1 - phi_3 * d2


def _multistep(denoiser, x, sigmas, callback, max_order: int, update) -> torch.Tensor:
    """DPM-Solver++ multistep: `update(x, sigma, sigma_next, x0_hats, hs, order)` takes each step."""
    steps = len(sigmas) - 1
    x0_hats: list[torch.Tensor] = []
    hs: list[torch.Tensor] = []
    for i in range(steps):
        sigma, sigma_next = sigmas[i], sigmas[i + 1]
        x0_hat = denoiser(x, sigma_batch(sigma, x))
        report(callback, i, sigmas, x, x0_hat)
        x0_hats = (x0_hats + [x0_hat])[-max_order:]
        # warm-up from first order, and lower orders on the last steps (the last one, to sigma = 0, is first order)
        order = min(max_order, len(x0_hats), steps - i)
        x = x0_hat if sigma_next == 0 else update(x, sigma, sigma_next, x0_hats, hs, order)
        hs = (hs + [torch.log(sigma / sigma_next)])[-max_order:]
    return x


def sde_update(x, sigma, sigma_next, x0_hats, hs, order: int, *, generator: Generator, eta: float = 1.0,
               s_noise: float = 1.0, heun: bool = False) -> torch.Tensor:
    """SDE-DPM-Solver++ (Lu et al. 2022b, App. B; first order, or second order by the midpoint rule or, with `heun`,
    the trapezoidal one, or third order), with k-diffusion's eta: the exact step of the linear part of
    dx = (1 + eta) (D - x) dlambda + sigma sqrt(2 eta) dw, which keeps the marginals for every eta >= 0 (eta = 1: the
    reverse SDE; eta = 0: DPM-Solver++(2M)). s_noise scales the fresh noise (1 keeps the marginals)."""
    h = torch.log(sigma / sigma_next)
    weight = -torch.expm1(-(1 + eta) * h)  # 1 - e^{-(1 + eta) h}
    # x_t = (sigma_t / sigma_s) e^{-eta h} x_s + alpha_t (1 - e^{-(1 + eta) h}) D + sigma_t sqrt(1 - e^{-2 eta h}) z,
    # divided by alpha_t
    mean = (sigma_next / sigma) * torch.exp(-eta * h) * x
    if order == 1:
        mean = mean + weight * x0_hats[-1]
    elif order == 3:
        # the Taylor terms of D under the kernel (1 + eta) e^{-(1 + eta)(h - tau)}: h phi_2 D' and h^2 phi_3 D'' with
        # phi_2 = 1 - (1 - e^{-(1 + eta) h}) / ((1 + eta) h), phi_3 = phi_2 / ((1 + eta) h) - 1/2; the divided
        # differences as dpmpp_3m's (k-diffusion's sample_dpmpp_3m_sde weights D'' by half, as its 3M does)
        r0, r1 = hs[-1] / h, hs[-2] / h
        d1_0, d1_1 = (x0_hats[-1] - x0_hats[-2]) / r0, (x0_hats[-2] - x0_hats[-3]) / r1
        d2 = 2 * (d1_0 - d1_1) / (r0 + r1)  # ~ h^2 D''
        phi_2 = 1 - weight / ((1 + eta) * h)
        phi_3 = phi_2 / ((1 + eta) * h) - 0.5
        mean = mean + weight * x0_hats[-1] + phi_2 * (d1_0 + (r0 / 2) * d2) - phi_3 * d2
    elif heun:
        # + (1 - (1 - e^{-(1 + eta) h}) / ((1 + eta) h)) (x0_i - x0_{i-1}) / r, r = h_prev / h
        mean = mean + weight * x0_hats[-1] + (1 - weight / ((1 + eta) * h)) * (x0_hats[-1] - x0_hats[-2]) * (h / hs[-1])
    else:
        mean = mean + weight * (x0_hats[-1] + 0.5 * (x0_hats[-1] - x0_hats[-2]) * (h / hs[-1]))  # midpoint rule
    return add_noise(mean, s_noise * sigma_next * (-torch.expm1(-2 * eta * h)).sqrt(), generator)


@register("dpmpp_2m", order=2, stochastic=False, nfe_per_step=1)
@torch.no_grad()
def sample_dpmpp_2m(
    denoiser, x: torch.Tensor, sigmas: torch.Tensor, *, generator: Generator = None, callback: Callback = None,
) -> torch.Tensor:
    """DPM-Solver++(2M), multistep with data prediction (Lu et al. 2022b, Alg. 2)."""
    return _multistep(denoiser, x, sigmas, callback, 2, multistep_update)


@register("dpmpp_3m", order=3, stochastic=False, nfe_per_step=1)
@torch.no_grad()
def sample_dpmpp_3m(
    denoiser, x: torch.Tensor, sigmas: torch.Tensor, *, generator: Generator = None, callback: Callback = None,
) -> torch.Tensor:
    """DPM-Solver++(3M), multistep with data prediction, 2nd order on the next-to-last step."""
    return _multistep(denoiser, x, sigmas, callback, 3, multistep_update)


@register("dpmpp_2m_sde", order=2, stochastic=True, nfe_per_step=1)
@torch.no_grad()
def sample_dpmpp_2m_sde(
    denoiser, x: torch.Tensor, sigmas: torch.Tensor, *, generator: Generator = None, callback: Callback = None,
    eta: float = 1.0, s_noise: float = 1.0,
) -> torch.Tensor:
    """SDE-DPM-Solver++(2M) with the midpoint rule (Lu et al. 2022b, App. B); noise-free last step to sigma = 0.

    eta (k-diffusion's, default 1: the paper's sampler) scales the Langevin part of the SDE it solves, see sde_update;
    eta = 0 is DPM-Solver++(2M)."""
    update = partial(sde_update, generator=generator, eta=eta, s_noise=s_noise)
    return _multistep(denoiser, x, sigmas, callback, 2, update)


@register("dpmpp_2m_sde_heun", order=2, stochastic=True, nfe_per_step=1)
@torch.no_grad()
def sample_dpmpp_2m_sde_heun(
    denoiser, x: torch.Tensor, sigmas: torch.Tensor, *, generator: Generator = None, callback: Callback = None,
    eta: float = 1.0, s_noise: float = 1.0,
) -> torch.Tensor:
    """SDE-DPM-Solver++(2M) with the trapezoidal (Heun) second-order term, k-diffusion's solver_type="heun" and
    diffusers' solver_type="heun"; eta and s_noise as dpmpp_2m_sde."""
    update = partial(sde_update, generator=generator, eta=eta, s_noise=s_noise, heun=True)
    return _multistep(denoiser, x, sigmas, callback, 2, update)


@register("dpmpp_3m_sde", order=3, stochastic=True, nfe_per_step=1)
@torch.no_grad()
def sample_dpmpp_3m_sde(
    denoiser, x: torch.Tensor, sigmas: torch.Tensor, *, generator: Generator = None, callback: Callback = None,
    eta: float = 1.0, s_noise: float = 1.0,
) -> torch.Tensor:
    """SDE-DPM-Solver++(3M) (k-diffusion's DPM++ 3M SDE): third order from the third step, the trapezoidal second order
    before it and on the next-to-last step; eta and s_noise as SDE-DPM-Solver++(2M)'s."""
    update = partial(sde_update, generator=generator, eta=eta, s_noise=s_noise, heun=True)
    return _multistep(denoiser, x, sigmas, callback, 3, update)
