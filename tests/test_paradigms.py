"""ParaDiGMS: Picard iteration over a window equals its sequential sampler at tolerance 0 and stays near it above."""

from __future__ import annotations

import pytest
import torch
from samplers_exact import GaussianDenoiser

from difflab.conditioning import Condition
from difflab.errors import DifflabError
from difflab.grids import append_zero, karras_sigmas, make_grid
from difflab.guidance import Guidance
from difflab.samplers import SAMPLERS
from difflab.schedules import DiscreteSchedule

PAIRS = [("paradigms_ddim", "ddim", {}), ("paradigms_ddim", "ddim", {"eta": 0.5}), ("paradigms_ddpm", "ddpm", {}),
         ("paradigms_dpmpp_2m", "dpmpp_2m", {})]


def start(n: int = 3, sigma: float = 80.0) -> torch.Tensor:
    return torch.randn(n, 1, 2, 2, generator=torch.Generator().manual_seed(0), dtype=torch.float64) * sigma


def generators(n: int = 3) -> list[torch.Generator]:
    return [torch.Generator().manual_seed(10 + i) for i in range(n)]


def run(name, denoiser, x, sigmas, **options):
    steps = []
    out = SAMPLERS[name].fn(denoiser, x, sigmas, generator=generators(len(x)), callback=steps.append, **options)
    return out, steps


@pytest.mark.parametrize("parallel,sequential,options", PAIRS)
@pytest.mark.parametrize("window", [1, 5, 40])
def test_tolerance_zero_is_the_sequential_sampler(parallel, sequential, options, window):
    sigmas = append_zero(karras_sigmas(0.002, 80.0, 30))
    denoiser = GaussianDenoiser(0.2, 0.3)
    expected, _ = run(sequential, denoiser, start(), sigmas, **options)
    got, steps = run(parallel, denoiser, start(), sigmas, window=window, tolerance=0.0, **options)
    torch.testing.assert_close(got, expected, rtol=1e-10, atol=1e-10)
    assert [s.i for s in steps] == list(range(30))
    assert steps[-1].rounds == denoiser.calls - 30 and steps[-1].nfe >= steps[-1].rounds
    if window == 1:
        assert steps[-1].rounds == steps[-1].nfe == 30  # a window of one is the sequential sampler


@pytest.mark.parametrize("parallel,sequential,options", PAIRS)
def test_default_tolerance_stays_near_the_sequential_sampler_in_fewer_rounds(parallel, sequential, options):
    """On the DDPM schedule's 100-step grid: the final samples differ by a small fraction of the data's std
    (0.55), less so at a smaller tolerance, and the window saves sequential rounds."""
    sigmas = make_grid(DiscreteSchedule(), 100, "trailing")
    x = start(4, float(sigmas[0]))
    differences = {}
    for tolerance in (0.1, 0.01):
        denoiser = GaussianDenoiser(0.2, 0.3)
        expected, _ = run(sequential, denoiser, x, sigmas, **options)
        got, steps = run(parallel, denoiser, x, sigmas, window=16, tolerance=tolerance, **options)
        differences[tolerance] = float((got - expected).pow(2).mean().sqrt())
        assert steps[-1].rounds < 60, (tolerance, steps[-1].rounds)
    assert differences[0.1] < 0.1 * 0.3**0.5
    assert differences[0.01] <= differences[0.1]


class LabelledGaussians:
    """D(x, sigma, cond): x0 ~ N(mu_y, s^2) per class y, so guidance has a closed form to act on."""

    def __init__(self):
        self.mu, self.s2 = torch.tensor([-1.0, 0.5, 2.0], dtype=torch.float64), 0.3

    def __call__(self, x, sigma, cond=None):
        labels = cond.labels.clamp(min=0) if cond is not None else torch.zeros(len(x), dtype=torch.long)
        mu = self.mu[labels].view(-1, *[1] * (x.ndim - 1))
        return mu + self.s2 / (self.s2 + sigma.view(-1, *[1] * (x.ndim - 1)) ** 2) * (x - mu)


@pytest.mark.parametrize("parallel,sequential", [("paradigms_ddim", "ddim"), ("paradigms_ddpm", "ddpm")])
def test_guided_denoiser_is_just_a_denoiser(parallel, sequential):
    """Classifier-free guidance over a window: every window row sees its own sample's condition."""
    cond = Condition(labels=torch.tensor([0, 2, 1]))
    guided = Guidance(cfg=1.5, threshold="static").wrap(LabelledGaussians(), cond)
    sigmas = append_zero(karras_sigmas(0.002, 80.0, 20))
    expected, _ = run(sequential, guided, start(), sigmas)
    got, _ = run(parallel, guided, start(), sigmas, window=6, tolerance=0.0)
    torch.testing.assert_close(got, expected, rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("options,message", [({"window": 0}, "--window must be an integer >= 1"),
                                             ({"tolerance": -1.0}, "--tolerance must be >= 0")])
def test_bad_window_or_tolerance_is_one_sentence(options, message):
    with pytest.raises(DifflabError, match=message):
        run("paradigms_ddim", GaussianDenoiser(0.2, 0.3), start(), append_zero(karras_sigmas(0.002, 80.0, 4)),
            **options)
