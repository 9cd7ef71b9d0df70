"""Noise-level grids: every kind descends strictly to 0, and each has the spacing its paper defines."""

from __future__ import annotations

import math

import pytest
import torch

from difflab.errors import DifflabError
from difflab.grids import GRIDS, make_grid, respaced_timesteps, spaced_timesteps
from difflab.schedules import DiscreteSchedule, ScheduleConfig

SCHEDULES = [DiscreteSchedule(), DiscreteSchedule(ScheduleConfig(kind="cosine")),
             DiscreteSchedule(ScheduleConfig(kind="scaled_linear", beta_start=0.00085, beta_end=0.012))]


@pytest.mark.parametrize("kind", GRIDS)
@pytest.mark.parametrize("n", [1, 2, 7, 50, 1000])
@pytest.mark.parametrize("schedule", SCHEDULES, ids=["linear", "cosine", "scaled_linear"])
def test_grids_are_float64_strictly_decreasing_and_end_in_zero(kind, n, schedule):
    sigmas = make_grid(schedule, n, kind)
    assert sigmas.dtype == torch.float64 and len(sigmas) == n + 1
    assert sigmas[-1] == 0 and bool((sigmas[1:] < sigmas[:-1]).all())
    assert float(sigmas[0]) <= schedule.sigma_max * (1 + 1e-12)
    if kind in ("trailing", "karras", "log_snr") or n == 1000:
        assert float(sigmas[0]) == pytest.approx(schedule.sigma_max, rel=1e-12)


def test_karras_is_linear_in_sigma_to_the_one_over_rho():
    inv = make_grid(SCHEDULES[0], 10, "karras")[:-1] ** (1 / 7)
    steps = inv[1:] - inv[:-1]
    torch.testing.assert_close(steps, steps.mean().expand(9), rtol=1e-9, atol=0)


def test_log_snr_grid_is_uniform_in_lambda():
    schedule = SCHEDULES[1]
    log_snr = -2 * make_grid(schedule, 10, "log_snr")[:-1].log()  # lambda = log(alpha^2 / sigma_vp^2) = -2 log sigma
    steps = log_snr[1:] - log_snr[:-1]
    torch.testing.assert_close(steps, steps.mean().expand(9), rtol=1e-9, atol=0)
    assert float(log_snr[-1]) == pytest.approx(-2 * math.log(schedule.sigma_min))


def test_spacings_of_lin_et_al():
    assert spaced_timesteps(1000, 4, "leading").tolist() == [750, 500, 250, 0]
    assert spaced_timesteps(1000, 4, "trailing").tolist() == [999, 749, 499, 249]
    assert spaced_timesteps(1000, 4, "linspace").tolist() == [999, 666, 333, 0]


def test_respacing_sections_of_nichol_and_dhariwal():
    # improved-diffusion space_timesteps(1000, [10, 15, 20]): sections of 334, 333, 333 timesteps
    timesteps = respaced_timesteps(1000, "10,15,20").flip(0).tolist()
    assert len(timesteps) == 45 and len(set(timesteps)) == 45
    assert timesteps[:10] == [round(i * 333 / 9) for i in range(10)]
    assert timesteps[10:25] == [334 + round(i * 332 / 14) for i in range(15)]
    assert timesteps[25] == 667 and timesteps[-1] == 999


def test_respacing_ddim_stride():
    assert respaced_timesteps(1000, "ddim50").tolist() == spaced_timesteps(1000, 50, "leading").tolist()
    assert respaced_timesteps(1000, "ddim7").flip(0).tolist() == list(range(0, 1000, 143))


def test_respaced_grid_and_its_errors():
    schedule = SCHEDULES[0]
    sigmas = make_grid(schedule, 45, "respaced", "10,15,20")
    assert torch.equal(sigmas[:-1], schedule.sigmas[respaced_timesteps(1000, "10,15,20")])
    for sections, message in [("10,15", "gives 25 steps but --steps is 45"), ("10,x", "--sections must be counts"),
                              ("0,45", "--sections must be counts"), ("ddim0", "--sections must be counts")]:
        with pytest.raises(DifflabError, match=message):
            make_grid(schedule, 45, "respaced", sections)
    with pytest.raises(DifflabError, match="section 0 has 500 timesteps"):
        make_grid(schedule, 502, "respaced", "501,1")
    with pytest.raises(DifflabError, match="applies only to --grid respaced"):
        make_grid(schedule, 10, "karras", "10")


def test_grid_errors_name_the_field():
    with pytest.raises(DifflabError, match="steps must be >= 1"):
        make_grid(SCHEDULES[0], 0, "karras")
    with pytest.raises(DifflabError, match="steps must be <= the schedule's 1000"):
        make_grid(SCHEDULES[0], 1001, "trailing")
    with pytest.raises(DifflabError, match="grid must be one of"):
        make_grid(SCHEDULES[0], 10, "uniform")


def test_explicit_levels_are_the_grid_and_bad_ones_are_named():
    schedule = SCHEDULES[0]
    trailing = make_grid(schedule, 4, "trailing")
    assert torch.equal(make_grid(schedule, 4, "karras", levels=trailing[:-1].tolist()), trailing)  # kind unused
    assert make_grid(schedule, 2, levels=[schedule.sigma_max, 0.8]).tolist() == [schedule.sigma_max, 0.8, 0.0]
    for levels, message in [([1.0, 2.0], "strictly decreasing order, got '1,2'"), ([3.0, 3.0], "strictly decreasing"),
                            ([math.nan, 1.0], "strictly decreasing"), ([200.0, 1.0], r"within the model's noise levels"),
                            ([1.0, 1e-4], "within the model's noise levels")]:
        with pytest.raises(DifflabError, match=message):
            make_grid(schedule, 2, levels=levels)
    with pytest.raises(DifflabError, match="--sigmas gives 2 levels but steps is 3"):
        make_grid(schedule, 3, levels=[2.0, 1.0])


@pytest.mark.parametrize("kind", ["karras", "log_snr", "leading", "trailing"])
def test_renoising_levels_never_end_at_sigma_min(kind):
    """A consistency sampler's re-noising at sigma_min would be a wasted step (f(x, sigma_min) = x): a grid ending
    there gives its first n of n + 1 levels instead, and grids that stop short of it are unchanged."""
    schedule, ended = SCHEDULES[0], []
    for n in (2, 4):
        plain, renoising = make_grid(schedule, n, kind), make_grid(schedule, n, kind, renoising=True)
        assert len(renoising) == n + 1 and float(renoising[-2]) > schedule.sigma_min
        ended.append(float(plain[-2]) == pytest.approx(schedule.sigma_min, rel=1e-9))
        if ended[-1]:
            assert torch.equal(renoising[:-1], make_grid(schedule, n + 1, kind)[:-2])
        else:
            assert torch.equal(renoising, plain)
    assert torch.equal(make_grid(schedule, 1, kind, renoising=True), make_grid(schedule, 1, kind))
    assert all(ended) == (kind != "trailing") and any(ended) == (kind != "trailing")
