"""ParaDiGMS: parallel sampling by Picard iteration over a sliding window of steps (Shih et al. 2023, Alg. 1).

A sequential sampler is a chain x_{i+1} = Phi_i(x_i) (with its noise z_i drawn up front, so the chain is a fixed
function of x_0 and the z's). Picard iteration guesses every x_i of a window of `window` steps at once, evaluates
the network on all of them in one batch, and updates the whole window from its start x_t:

    x_{t+j+1}^{k+1} = x_t + sum_{i=t}^{t+j} (Phi_i(x_i^k) - x_i^k)        (Shih et al. 2023, Eq. 4)

whose fixed point is the sequential chain. The window slides past every position whose update changed it by less
than the tolerance, measured on the noise scale: ||x^{k+1} - x^k||^2 / D <= tolerance^2 * beta_tilde of the step
out of that position (Alg. 1, line 11; with tolerance 0 the result is the sequential sampler's). Each round is one
sequential network call on up to `window` rows per image; the callback's StepInfo reports the evaluations per
image (nfe) and the rounds so far as the window passes each step.

Wrapped here: DDIM (any eta), DDPM ancestral (fixed or learned variance) and DPM-Solver++(2M), whose step also
reads the previous step's x0_hat: its Picard map Phi_i(x_i, x_{i-1}) has the 2M chain as its fixed point too.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from difflab.errors import DifflabError
from difflab.samplers import register
from difflab.samplers.ancestral import ddpm_posterior
from difflab.samplers.common import (
    Callback,
    Generator,
    ancestral_step,
    randn_like,
    report,
)
from difflab.samplers.dpm_solver import multistep_update

DEFAULT_WINDOW = 8
DEFAULT_TOLERANCE = 0.1  # diffusers' ParaDiGMS pipeline default (tau, on the noise std)

# Phi_i: (step i, x_i, x0_hats, vs) -> x_{i+1}, given the latest x0_hat (and learned variance v) at every position
Step = Callable[[int, torch.Tensor, list, list], torch.Tensor]


class NoiseStream:
    """The chain's per-step noise z_i, drawn in step order from the sampler's generator(s) as windows first reach
    them (so the draws equal the sequential sampler's) and dropped once the window has passed them."""

    def __init__(self, x: torch.Tensor, generator: Generator, noisy: list[bool]):
        self.x, self.generator, self.noisy = x, generator, noisy
        self.drawn: dict[int, torch.Tensor | None] = {}
        self.next = 0

    def __getitem__(self, i: int) -> torch.Tensor | None:
        while self.next <= i:
            self.drawn[self.next] = randn_like(self.x, self.generator) if self.noisy[self.next] else None
            self.next += 1
        return self.drawn[i]

    def drop(self, below: int) -> None:
        for i in [i for i in self.drawn if i < below]:
            del self.drawn[i]


def step_variances(sigmas: torch.Tensor) -> torch.Tensor:
    """beta_tilde of the step out of each level in VE coordinates, sigma_s^2 (1 - sigma_s^2 / sigma_t^2); 0 at the
    end: the tolerance's scale (the paper's g^2, ParaDiGMS pipeline's scheduler variance)."""
    return torch.cat([sigmas[1:] ** 2 * (1 - (sigmas[1:] / sigmas[:-1]) ** 2), sigmas.new_zeros(1)])


def picard(denoiser, x: torch.Tensor, sigmas: torch.Tensor, step: Step, *, window: int, tolerance: float,
           callback: Callback, with_variance: bool = False) -> torch.Tensor:
    """Run the chain x_{i+1} = step(i, x_i, ...) over `sigmas` by sliding-window Picard iteration."""
    if not (isinstance(window, int) and window >= 1):
        raise DifflabError(f"--window must be an integer >= 1, got {window!r}")
    if not tolerance >= 0:
        raise DifflabError(f"--tolerance must be >= 0, got {tolerance}")
    n = len(sigmas) - 1
    evaluate = getattr(denoiser, "with_variance", None) if with_variance else None
    threshold = (tolerance**2 * step_variances(sigmas)).tolist()
    trajectory: list = [x] * (n + 1)  # the current guess of every x_i; x_0 is fixed
    x0_hats: list[torch.Tensor | None] = [None] * n
    vs: list[torch.Tensor | None] = [None] * n
    t = rounds = evaluations = 0
    while t < n:
        end = min(t + window, n)
        block = torch.stack(trajectory[t:end])  # [p, B, ...]: the window's positions, each a batch
        p, b = block.shape[:2]
        levels = sigmas[t:end].to(x.dtype).repeat_interleave(b)  # row j * B + k is position t + j, image k
        rows = block.flatten(0, 1)
        out, v = evaluate(rows, levels) if evaluate is not None else (denoiser(rows, levels), None)
        rounds, evaluations = rounds + 1, evaluations + p
        for j in range(p):
            x0_hats[t + j] = out[j * b: (j + 1) * b]
            vs[t + j] = None if v is None else v[j * b: (j + 1) * b]
        # Eq. 4: x_{t+j+1} = x_t + sum_{i <= t+j} (Phi_i(x_i) - x_i), the drifts of all positions from this round
        new, total = [], trajectory[t]
        for i in range(t, end):
            total = total + (step(i, trajectory[i], x0_hats, vs) - trajectory[i])
            new.append(total)
        stride = p  # Alg. 1: slide to the first position whose update exceeds the tolerance (it is exact now)
        for j, x_new in enumerate(new, start=1):
            error = (x_new - trajectory[t + j]).pow(2).flatten(1).mean(1).max()  # ||.||^2 / D, worst image
            if error > threshold[t + j]:
                stride = j
                break
        trajectory[t + 1: end + 1] = new
        for i in range(end + 1, min(t + stride + window, n) + 1):
            trajectory[i] = trajectory[end]  # positions entering the window start from the latest end point
        for i in range(t, t + stride):
            report(callback, i, sigmas, trajectory[i], x0_hats[i], evaluations, rounds)
            trajectory[i] = None  # passed: only x0_hat of the step before the window is read again (2M)
            if i > 0:
                x0_hats[i - 1] = vs[i - 1] = None
        t += stride
    return trajectory[n]


@register("paradigms_ddim", order=1, stochastic=False, nfe_per_step=1)
@torch.no_grad()
def sample_paradigms_ddim(
    denoiser, x: torch.Tensor, sigmas: torch.Tensor, *, generator: Generator = None, callback: Callback = None,
    window: int = DEFAULT_WINDOW, tolerance: float = DEFAULT_TOLERANCE, eta: float = 0.0,
) -> torch.Tensor:
    """ParaDDIM: DDIM (any eta) by parallel Picard iteration over a window of steps (Shih et al. 2023)."""
    splits = [ancestral_step(sigmas[i], sigmas[i + 1], eta) for i in range(len(sigmas) - 1)]
    noise = NoiseStream(x, generator, [float(up) != 0.0 for _, up in splits])

    def step(i: int, x_i: torch.Tensor, x0_hats: list, vs: list) -> torch.Tensor:
        sigma_down, sigma_up = splits[i]
        eps_hat = (x_i - x0_hats[i]) / sigmas[i].to(x_i.dtype)
        # Song et al. 2021, Eq. 12 in VE coordinates: x0_hat + sigma_down eps_hat + sigma_up z
        x_next = x0_hats[i] + sigma_down.to(x_i.dtype) * eps_hat
        z = noise[i]
        return x_next if z is None else x_next + sigma_up.to(x_i.dtype) * z

    return _run(denoiser, x, sigmas, step, noise, window, tolerance, callback)


@register("paradigms_ddpm", order=1, stochastic=True, nfe_per_step=1)
@torch.no_grad()
def sample_paradigms_ddpm(
    denoiser, x: torch.Tensor, sigmas: torch.Tensor, *, generator: Generator = None, callback: Callback = None,
    window: int = DEFAULT_WINDOW, tolerance: float = DEFAULT_TOLERANCE, variance: str | None = None,
) -> torch.Tensor:
    """ParaDDPM: DDPM ancestral sampling, its noise drawn up front, by parallel Picard iteration (Shih et al. 2023)."""
    if variance not in (None, "learned", "beta_tilde", "beta"):
        raise DifflabError(f"--variance must be learned, beta_tilde or beta, got {variance!r}")
    if getattr(denoiser, "mean_shift", None) is not None:
        raise DifflabError("paradigms_ddpm does not shift the ancestral mean: use --classifier-form eps")
    noise = NoiseStream(x, generator, [float(s) > 0 for s in sigmas[1:]])

    def step(i: int, x_i: torch.Tensor, x0_hats: list, vs: list) -> torch.Tensor:
        if variance == "learned" and vs[i] is None:
            raise DifflabError("--variance learned needs a model trained with learned variance (--loss hybrid or vlb)")
        mean, var = ddpm_posterior(x_i, x0_hats[i], vs[i], sigmas[i], sigmas[i + 1], variance)  # Ho et al., Eq. 7
        return mean if var is None else mean + var.sqrt().to(x_i.dtype) * noise[i]

    return _run(denoiser, x, sigmas, step, noise, window, tolerance, callback,
                with_variance=variance in (None, "learned"))


@register("paradigms_dpmpp_2m", order=2, stochastic=False, nfe_per_step=1)
@torch.no_grad()
def sample_paradigms_dpmpp_2m(
    denoiser, x: torch.Tensor, sigmas: torch.Tensor, *, generator: Generator = None, callback: Callback = None,
    window: int = DEFAULT_WINDOW, tolerance: float = DEFAULT_TOLERANCE,
) -> torch.Tensor:
    """ParaDiGMS over DPM-Solver++(2M): the multistep chain by parallel Picard iteration (Shih et al. 2023)."""
    steps = len(sigmas) - 1

    def step(i: int, x_i: torch.Tensor, x0_hats: list, vs: list) -> torch.Tensor:
        sigma, sigma_next = sigmas[i], sigmas[i + 1]
        if sigma_next == 0:
            return x0_hats[i]  # the h -> inf limit, as in the sequential solver
        order = min(2, i + 1, steps - i)  # first order on the first step, as the sequential warm-up
        history = x0_hats[max(i - 1, 0): i + 1]
        hs = [torch.log(sigmas[i - 1] / sigma)] if i > 0 else []
        return multistep_update(x_i, sigma, sigma_next, history, hs, order)  # Lu et al. 2022b, Alg. 2

    return _run(denoiser, x, sigmas, step, None, window, tolerance, callback)


def _run(denoiser, x, sigmas, step: Step, noise: NoiseStream | None, window, tolerance, callback,
         with_variance: bool = False) -> torch.Tensor:
    """picard() with the noise of passed steps freed as the window slides."""

    def report_and_free(info) -> None:
        if noise is not None:
            noise.drop(info.i)
        if callback is not None:
            callback(info)

    return picard(denoiser, x, sigmas, step, window=window, tolerance=tolerance, callback=report_and_free,
                  with_variance=with_variance)
