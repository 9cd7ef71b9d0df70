"""The reverse SDE by Euler-Maruyama for VP, sub-VP and VE SDEs, and the predictor-corrector sampler
(Song et al. 2021). The state is kept in VE coordinates and mapped to each SDE's own coordinates per step."""

from __future__ import annotations

from typing import Literal

import torch

from difflab.samplers import register
from difflab.samplers.common import Callback, Generator, add_noise, randn_like, report, sigma_batch
from difflab.samplers.langevin import langevin_step, score_at

SDE = Literal["vp", "subvp", "ve"]
SDES: tuple[SDE, ...] = ("vp", "subvp", "ve")


def sde_scale(sde: SDE, sigma: torch.Tensor) -> torch.Tensor:
    """a(sigma) with x_sde = a * x: the SDE's signal scale at the VE level sigma."""
    if sde == "vp":
        return torch.rsqrt(1 + sigma**2)  # alpha = sqrt(alpha_bar), sigma = sqrt(1 - alpha_bar) / alpha
    if sde == "subvp":
        # Song et al. 2021, Eq. 34: std = 1 - alpha_bar, so sigma = (1 - a^2) / a: a is the root of a^2 + sigma a - 1
        return 2 / (torch.sqrt(sigma**2 + 4) + sigma)
    return torch.ones_like(sigma)


def sde_time(sde: SDE, sigma: torch.Tensor) -> torch.Tensor:
    """tau(sigma), a time in which the SDE's coefficients are simple: int beta dt for VP/sub-VP, sigma^2 for VE."""
    if sde == "ve":
        return sigma**2  # dx = dw in tau = sigma^2 (Song et al. 2021, Eq. 30)
    return -2 * torch.log(sde_scale(sde, sigma))  # tau = int beta dt = -log alpha_bar


def sde_diffusion2(sde: SDE, sigma: torch.Tensor) -> torch.Tensor:
    """g^2 in tau-time: 1 for VP and VE, 1 - alpha_bar^2 for sub-VP (Song et al. 2021, Eq. 34)."""
    return 1 - sde_scale(sde, sigma) ** 4 if sde == "subvp" else torch.ones_like(sigma)


def euler_maruyama_step(
    x: torch.Tensor, x0_hat: torch.Tensor, sigma, sigma_next, sde: SDE, generator: Generator,
) -> torch.Tensor:
    """One Euler-Maruyama step of the reverse SDE dx = [f x - g^2 score] dtau + g dw, in the SDE's coordinates.

    f = -1/2 for VP and sub-VP, 0 for VE. The step to sigma = 0 adds no noise (Song et al. 2021, App. G).
    """
    a, a_next = sde_scale(sde, sigma), sde_scale(sde, sigma_next)
    dtau = sde_time(sde, sigma) - sde_time(sde, sigma_next)
    g2 = sde_diffusion2(sde, sigma)
    x_sde = a * x
    score = (a * x0_hat - x_sde) / (a * sigma) ** 2  # x_sde ~ N(a x0, (a sigma)^2) given x0
    drift = 0.5 * x_sde + g2 * score if sde != "ve" else g2 * score  # -f x + g^2 score
    x_sde = x_sde + drift * dtau
    if sigma_next > 0:
        x_sde = add_noise(x_sde, torch.sqrt(g2 * dtau), generator)
    return x_sde / a_next


@register("euler_maruyama", order=1, stochastic=True, nfe_per_step=1)
@torch.no_grad()
def sample_euler_maruyama(
    denoiser, x: torch.Tensor, sigmas: torch.Tensor, *, generator: Generator = None, callback: Callback = None,
    sde: SDE = "vp",
) -> torch.Tensor:
    """Euler-Maruyama on the reverse-time SDE (Song et al. 2021, Eq. 6) of the VP, sub-VP or VE SDE."""
    if sde not in SDES:
        raise ValueError(f"sde must be one of {', '.join(SDES)}, got {sde!r}")
    for i in range(len(sigmas) - 1):
        x0_hat = denoiser(x, sigma_batch(sigmas[i], x))
        report(callback, i, sigmas, x, x0_hat)
        x = euler_maruyama_step(x, x0_hat, sigmas[i], sigmas[i + 1], sde, generator)
    return x


def snr_step_size(score: torch.Tensor, z: torch.Tensor, snr: float) -> torch.Tensor:
    """Song et al. 2021, Alg. 4 line 5 with alpha_i = 1 (VE coordinates): eps = 2 (r ||z|| / ||s||)^2.

    As in the authors' code, ||z|| and ||s|| are per-sample norms averaged over the batch: with a per-sample ratio
    the step has infinite mean in 2-D (1/||s||^2 of a chi^2_2 variable), and the sampler diverges on toy data.
    The price is that one batch shares the step, so a sample depends (weakly) on the others in its batch.
    """
    norm = lambda t: t.flatten(1).norm(dim=1).mean()  # noqa: E731
    return 2 * (snr * norm(z) / norm(score)) ** 2


@register("predictor_corrector", order=1, stochastic=True, nfe_per_step=2)
@torch.no_grad()
def sample_predictor_corrector(
    denoiser, x: torch.Tensor, sigmas: torch.Tensor, *, generator: Generator = None, callback: Callback = None,
    snr: float = 0.16, langevin_steps: int = 1,
) -> torch.Tensor:
    """Predictor-corrector (Song et al. 2021, Alg. 2): Langevin corrector (SNR rule), reverse-diffusion predictor.

    At each level, `langevin_steps` corrector steps, then the reverse-diffusion predictor of the VE SDE,
    x + (sigma^2 - sigma_next^2) score + sqrt(sigma^2 - sigma_next^2) z (Eq. 47), noise-free to sigma = 0.
    NFE per step = langevin_steps + 1 (2 by default).
    """
    for i in range(len(sigmas) - 1):
        sigma = sigmas[i]
        for _ in range(langevin_steps):
            _, score = score_at(denoiser, x, sigma)
            z = randn_like(x, generator)
            x = langevin_step(x, score, snr_step_size(score, z, snr), z)
        x0_hat = denoiser(x, sigma_batch(sigma, x))
        report(callback, i, sigmas, x, x0_hat)
        x = euler_maruyama_step(x, x0_hat, sigma, sigmas[i + 1], "ve", generator)
    return x
