"""One contract for every registered sampler, the identities between samplers, and the sampler flags of the CLI."""

from __future__ import annotations

import argparse
import inspect
from types import SimpleNamespace

import pytest
import torch
from samplers_exact import GaussianDenoiser

from difflab.commands.sample import OPTION_RANGES, add_sampling_arguments, sampler_options
from difflab.errors import DifflabError
from difflab.grids import append_zero, karras_sigmas, make_grid
from difflab.samplers import SAMPLERS
from difflab.samplers.common import Interrupted
from difflab.schedules import DiscreteSchedule

SHAPE = (3, 1, 2, 2)  # a batch of tiny one-channel images
# the batch is one particle set (svgd) or shares the corrector's step size (predictor_corrector)
BATCH_COUPLED = {"svgd", "predictor_corrector"}


def grid(n: int) -> torch.Tensor:
    return append_zero(karras_sigmas(0.002, 80.0, n)) if n > 1 else torch.tensor([80.0, 0.0], dtype=torch.float64)


def start(dtype=torch.float64, seed: int = 0) -> torch.Tensor:
    return torch.randn(SHAPE, generator=torch.Generator().manual_seed(seed), dtype=dtype) * 80


def run(name: str, x: torch.Tensor, sigmas: torch.Tensor, seed=0, **kwargs) -> torch.Tensor:
    return SAMPLERS[name].fn(GaussianDenoiser(0.2, 0.3), x, sigmas, generator=torch.Generator().manual_seed(seed),
                             **kwargs)


@pytest.mark.parametrize("name", sorted(SAMPLERS))
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_shape_dtype_and_determinism(name, dtype):
    first, second = run(name, start(dtype), grid(6)), run(name, start(dtype), grid(6))
    assert first.shape == SHAPE and first.dtype == dtype
    assert torch.isfinite(first).all()
    assert torch.equal(first, second)


@pytest.mark.parametrize("name", sorted(SAMPLERS))
def test_one_step_runs(name):
    assert torch.isfinite(run(name, start(), grid(1))).all()


@pytest.mark.parametrize("name", sorted(SAMPLERS))
def test_callback_once_per_grid_step_and_nfe_as_registered(name):
    sigmas, steps, denoiser = grid(7), [], GaussianDenoiser(0.2, 0.3)
    SAMPLERS[name].fn(denoiser, start(), sigmas, generator=torch.Generator().manual_seed(0), callback=steps.append)
    assert [s.i for s in steps] == list(range(len(sigmas) - 1))
    assert [(s.sigma, s.sigma_next) for s in steps] == list(zip(sigmas[:-1].tolist(), sigmas[1:].tolist()))
    n, per_step = len(sigmas) - 1, SAMPLERS[name].nfe_per_step
    if name == "rk45":
        assert steps[-1].nfe == denoiser.calls  # adaptive: it reports what it spent
    else:
        assert per_step * (n - 1) + 1 <= denoiser.calls <= per_step * n + 1  # last step may take fewer (or a denoise)


@pytest.mark.parametrize("name", sorted(SAMPLERS))
def test_callback_can_interrupt(name):
    def stop(step):
        if step.i == 1:
            raise Interrupted

    with pytest.raises(Interrupted):
        run(name, start(), grid(4), callback=stop)


@pytest.mark.parametrize("name", sorted(set(SAMPLERS) - BATCH_COUPLED))
def test_batch_size_does_not_change_a_sample(name):
    """With one generator per sample, sample i is the same alone or in a batch."""
    x = start()
    make = lambda seeds: [torch.Generator().manual_seed(s) for s in seeds]  # noqa: E731
    denoiser = GaussianDenoiser(0.2, 0.3)
    batch = SAMPLERS[name].fn(denoiser, x, grid(5), generator=make([10, 11, 12]))
    for i in range(3):
        alone = SAMPLERS[name].fn(denoiser, x[i: i + 1], grid(5), generator=make([10 + i]))
        torch.testing.assert_close(batch[i: i + 1], alone, rtol=1e-12, atol=1e-12)


def test_stochastic_samplers_depend_on_the_seed():
    for name, info in SAMPLERS.items():
        if info.stochastic:
            assert not torch.equal(run(name, start(), grid(4), seed=0), run(name, start(), grid(4), seed=1)), name


@pytest.mark.parametrize("other", ["euler", "dpm_solver_1"])
def test_ddim_eta0_is_euler(other):
    sigmas = grid(12)
    torch.testing.assert_close(run("ddim", start(), sigmas), run(other, start(), sigmas), rtol=1e-12, atol=1e-12)


def test_ddim_eta1_is_ddpm_on_the_full_chain():
    sigmas = make_grid(DiscreteSchedule(), 1000, "leading")
    x = start() / 80 * sigmas[0]
    torch.testing.assert_close(run("ddim", x, sigmas, eta=1.0), run("ddpm", x, sigmas), rtol=1e-10, atol=1e-10)


def test_dpmpp_2m_sde_with_eta0_is_dpmpp_2m_and_draws_no_noise():
    sigmas = grid(12)
    torch.testing.assert_close(run("dpmpp_2m_sde", start(), sigmas, eta=0.0, seed=0),
                               run("dpmpp_2m", start(), sigmas), rtol=1e-12, atol=1e-12)
    assert torch.equal(run("dpmpp_2m_sde", start(), sigmas, eta=0.0, seed=0),
                       run("dpmpp_2m_sde", start(), sigmas, eta=0.0, seed=1))


def test_dpmpp_2m_sde_default_is_eta1_and_s_noise_scales_only_the_noise():
    sigmas = grid(12)
    default = run("dpmpp_2m_sde", start(), sigmas, seed=0)
    assert torch.equal(run("dpmpp_2m_sde", start(), sigmas, seed=0, eta=1.0, s_noise=1.0), default)
    quiet = run("dpmpp_2m_sde", start(), sigmas, seed=0, s_noise=0.0)  # eta = 1 drift, no fresh noise
    assert not torch.equal(quiet, default) and torch.equal(quiet, run("dpmpp_2m_sde", start(), sigmas, seed=1,
                                                                       s_noise=0.0))


FIXED_VARIANCE, LEARNED_VARIANCE = (SimpleNamespace(learned_variance=v, default_grid="trailing") for v in (False, True))


def parse(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    add_sampling_arguments(parser)
    return parser.parse_args(list(argv))


@pytest.mark.parametrize("argv,expected", [
    (["--sampler", "heun", "--s-churn", "1", "--s-tmin", "0.1"], {"s_churn": 1.0, "s_tmin": 0.1}),
    (["--sampler", "rk45", "--rtol", "1e-3", "--atol", "1e-5"], {"rtol": 1e-3, "atol": 1e-5}),
    (["--sampler", "predictor_corrector", "--snr", "0.1", "--langevin-steps", "2"], {"snr": 0.1, "langevin_steps": 2}),
    (["--sampler", "euler_maruyama", "--sde", "subvp"], {"sde": "subvp"}),
    (["--sampler", "annealed_langevin", "--step-size", "0.5"], {"step_size": 0.5}),
    (["--sampler", "euler_ancestral", "--eta", "0.5"], {"eta": 0.5}),
    (["--sampler", "dpmpp_2m_sde", "--eta", "0.5", "--s-noise", "0.9"], {"eta": 0.5, "s_noise": 0.9}),
    (["--sampler", "ddpm", "--variance", "beta"], {"variance": "beta"}),
])
def test_cli_options_reach_the_sampler(argv, expected):
    assert sampler_options(parse(*argv), FIXED_VARIANCE) == expected


def test_variance_learned_needs_a_model_that_learned_it():
    assert sampler_options(parse("--sampler", "ddpm", "--variance", "learned"), LEARNED_VARIANCE) == {"variance": "learned"}
    with pytest.raises(DifflabError, match="--variance learned needs a model trained with learned variance"):
        sampler_options(parse("--sampler", "ddpm", "--variance", "learned"), FIXED_VARIANCE)


@pytest.mark.parametrize("argv,message", [
    (["--sampler", "ddim", "--s-churn", "1"], "--s-churn does not apply to sampler 'ddim'"),
    (["--sampler", "heun", "--s-churn", "-1"], "--s-churn must be >= 0"),
    (["--sampler", "rk45", "--rtol", "2"], "--rtol must be in (0, 1)"),
    (["--sampler", "predictor_corrector", "--langevin-steps", "0"], "--langevin-steps must be >= 1"),
    (["--sampler", "svgd", "--snr", "0.1"], "--snr does not apply to sampler 'svgd'"),
    (["--sampler", "heun", "--s-tmin", "2", "--s-tmax", "1"], "--s-tmin must be <= --s-tmax"),
    (["--sampler", "ddim", "--sections", "10,10"], "--sections applies only to --grid respaced"),
    (["--sampler", "nope"], "unknown sampler 'nope'"),
])
def test_cli_rejects_bad_options_in_one_sentence(argv, message):
    with pytest.raises(DifflabError, match=message.replace("(", r"\(").replace(")", r"\)")):
        sampler_options(parse(*argv), FIXED_VARIANCE)


def test_every_sampler_option_has_a_flag_and_every_flag_a_sampler():
    """`difflab sample` can pass every keyword option of every sampler, and has no flag that no sampler takes."""
    taken = set()
    for info in SAMPLERS.values():
        options = set(inspect.signature(info.fn).parameters) - {"denoiser", "x", "sigmas", "generator", "callback"}
        assert options <= set(OPTION_RANGES), (info.name, options - set(OPTION_RANGES))
        taken |= options
    assert taken == set(OPTION_RANGES)
