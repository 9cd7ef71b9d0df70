"""Stein variational gradient descent (Liu & Wang 2016) as a particle sampler driven by the model's score."""

from __future__ import annotations

import math

import torch

from difflab.samplers import register
from difflab.samplers.common import Callback, Generator, report, sigma_batch
from difflab.samplers.langevin import score_at


def svgd_direction(x: torch.Tensor, score: torch.Tensor) -> torch.Tensor:
    """phi(x_i) = 1/n sum_j [k(x_j, x_i) score(x_j) + grad_{x_j} k(x_j, x_i)], particles x [n, d] (Liu & Wang, Eq. 8).

    RBF kernel k(x, y) = exp(-||x - y||^2 / h) with the median heuristic h = med^2 / log(n + 1) (Sec. 5).
    """
    n = x.shape[0]
    dist2 = torch.cdist(x, x).pow(2)
    h = dist2.flatten().median().clamp_min(1e-12) / math.log(n + 1)
    kernel = torch.exp(-dist2 / h)
    # grad_{x_j} k(x_j, x_i) = 2 (x_i - x_j) / h * k, summed over j
    repulsion = (2 / h) * (x * kernel.sum(1, keepdim=True) - kernel @ x)
    return (kernel @ score + repulsion) / n


@register("svgd", order=1, stochastic=False, nfe_per_step=1)
@torch.no_grad()
def sample_svgd(
    denoiser, x: torch.Tensor, sigmas: torch.Tensor, *, generator: Generator = None, callback: Callback = None,
    step_size: float = 0.02,
) -> torch.Tensor:
    """SVGD with the model's score at the grid's smallest positive level; one update per grid step (Liu & Wang 2016).

    The batch is one set of interacting particles. They start from the prior draw in VP coordinates,
    x_T = x / sqrt(1 + sigma_0^2) ~ N(0, I), and move by x <- x + step_size * phi / sqrt(G) with G a running
    average of phi^2 (the AdaGrad-style step of the authors' released code), so step_size is a distance in data
    units; the particles approach p(x; sigma_min), and a last denoising step x0_hat = D(x, sigma_min) ends the run at
    sigma = 0 like the other samplers. NFE = steps + 1. For low-dimensional (2-D toy) data.
    """
    shape, sigma = x.shape, sigmas[-2]
    x = x / torch.sqrt(1 + sigmas[0] ** 2).to(x.dtype)
    mean_square = None
    for i in range(len(sigmas) - 1):
        x0_hat, score = score_at(denoiser, x, sigma)
        phi = svgd_direction(x.flatten(1), score.flatten(1)).view(shape)
        # running mean of phi^2 with decay 0.9, started at the first phi^2 (Liu & Wang's released svgd.py)
        mean_square = phi**2 if mean_square is None else 0.9 * mean_square + 0.1 * phi**2
        x = x + step_size * phi / (1e-6 + mean_square.sqrt())
        report(callback, i, sigmas, x, x0_hat)
    return denoiser(x, sigma_batch(sigma, x))  # the final step to sigma = 0: x0_hat = D(x, sigma_min)
