"""Oracle: our samplers against diffusers' schedulers with the same fixed eps-network, timesteps and noise.

Configurations matched (all with prediction_type="epsilon"), to 1e-5:
- DDPMScheduler(beta_schedule="linear", clip_sample=False, variance_type="fixed_small" | "fixed_large"), 1000 steps
  and 50 "leading" steps == ddpm(variance="beta_tilde" | "beta") on make_grid(.., "leading");
- DDIMScheduler(beta_schedule="linear", clip_sample=False, set_alpha_to_one=True, steps_offset=0,
  timestep_spacing="leading" | "trailing"), eta 0 and 1 == ddim(eta) on make_grid(.., spacing). With "linspace",
  diffusers steps from t to t - T // n instead of to the next timestep of its own list (diffusers #12633), so it
  solves a different chain (ours differs from it by 0.047 at 20 steps); that case is not compared;
- EulerDiscreteScheduler / HeunDiscreteScheduler(beta_schedule="scaled_linear", use_karras_sigmas=True,
  final_sigmas_type="zero") == euler / heun on scheduler.sigmas;
- DPMSolverMultistepScheduler(beta_schedule="scaled_linear", algorithm_type="dpmsolver++" | "sde-dpmsolver++",
  solver_order=2, final_sigmas_type="zero", timestep_spacing="trailing") == dpmpp_2m / dpmpp_2m_sde (solver_type
  "midpoint") and dpmpp_2m_sde_heun (solver_type "heun") on
  scheduler.sigmas (its solver_order=3 is not compared: its 3rd-order term has half its Taylor weight, see
  difflab/samplers/dpm_solver.py, and it converges with order 2);
- KDPM2DiscreteScheduler(beta_schedule="scaled_linear") == dpm_2 on its levels, to 5e-7;
- UniPCMultistepScheduler(beta_schedule="scaled_linear", predict_x0=True, lower_order_final=True, solver_order=1-3,
  solver_type="bh1" | "bh2", timestep_spacing="trailing") == unipc(order, solver_type) on scheduler.sigmas, to 1.6e-7.
Samplers run in VE coordinates; diffusers' DDPM, DDIM and DPM-Solver states are VP, x_vp = x / sqrt(1 + sigma^2).
Measured (samples of size ~1): DDPM and DDIM agree to 5e-13 (both in float64 with our tables), Euler, Heun and
DPM-Solver++(2M) / SDE-DPM-Solver++(2M) to 7e-7 (diffusers steps those in float32).
"""

from __future__ import annotations

import pytest
import torch
from torch import nn

from difflab.denoiser import Denoiser, VPPrecond
from difflab.grids import make_grid, spaced_timesteps
from difflab.samplers import SAMPLERS
from difflab.schedules import DiscreteSchedule, ScheduleConfig

diffusers = pytest.importorskip("diffusers")

SHAPE = (4, 6)
TOLERANCE = 1e-5
LINEAR = ScheduleConfig(kind="linear", beta_start=1e-4, beta_end=0.02)
SCALED = ScheduleConfig(kind="scaled_linear", beta_start=0.00085, beta_end=0.012)


class EpsNet(nn.Module):
    """A fixed smooth eps(x_t, t) that keeps samples O(1): about the eps of unit-variance data,
    sqrt(1 - alpha_bar) x_t with alpha_bar ~ exp(-6 t / 1000), plus a term nonlinear in x_t that varies with t.
    t is a scalar or [B]."""

    def __init__(self):
        super().__init__()
        self.w = nn.Parameter(torch.tensor([0.7, 0.3, 0.1], dtype=torch.float64))

    def forward(self, x_t: torch.Tensor, t, cond=None) -> torch.Tensor:
        t = torch.as_tensor(t, dtype=x_t.dtype)
        t = t.reshape(-1, *([1] * (x_t.ndim - 1))) if t.ndim == 1 else t
        return (torch.sqrt(-torch.expm1(-6 * t / 1000)) * x_t
                + self.w[2] * torch.tanh(self.w[0] * x_t + self.w[1] * torch.sin(t / 150)))


NET = EpsNet()


def model(x_vp: torch.Tensor, t) -> torch.Tensor:
    return NET(x_vp.double(), t)


def with_our_tables(scheduler, config: ScheduleConfig):
    """diffusers builds its beta and alpha_bar tables in float32; give it ours (float64) so both solve one chain."""
    schedule = DiscreteSchedule(config)
    scheduler.betas, scheduler.alphas, scheduler.alphas_cumprod = schedule.betas, 1 - schedule.betas, schedule.alpha_bar
    if hasattr(scheduler, "final_alpha_cumprod"):
        scheduler.final_alpha_cumprod = torch.tensor(1.0, dtype=torch.float64)
    return scheduler


def noise(seed: int) -> torch.Tensor:
    return torch.randn(SHAPE, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


def ours(config: ScheduleConfig, name: str, sigmas: torch.Tensor, x: torch.Tensor, seed=0, **options):
    denoiser = Denoiser(NET, VPPrecond(DiscreteSchedule(config), "eps"))
    return SAMPLERS[name].fn(denoiser, x, sigmas.double(), generator=torch.Generator().manual_seed(seed), **options)


def ve(x_vp: torch.Tensor, sigmas: torch.Tensor) -> torch.Tensor:
    return x_vp * torch.sqrt(1 + sigmas[0].double() ** 2)  # a VP state at sigmas[0] in VE coordinates


@pytest.mark.parametrize("steps", [1000, 50])
@pytest.mark.parametrize("variance_type,variance", [("fixed_small", "beta_tilde"), ("fixed_large", "beta")])
def test_ddpm_matches_ddpm_scheduler(steps, variance_type, variance):
    scheduler = with_our_tables(diffusers.DDPMScheduler(beta_schedule="linear", clip_sample=False,
                                                        variance_type=variance_type), LINEAR)
    scheduler.set_timesteps(steps)
    sigmas = make_grid(DiscreteSchedule(LINEAR), steps, "leading")
    assert scheduler.timesteps.tolist() == spaced_timesteps(1000, steps, "leading").tolist()
    x, generator = noise(1), torch.Generator().manual_seed(0)
    for t in scheduler.timesteps:
        x = scheduler.step(model(x, t), t, x, generator=generator).prev_sample
    expected = ours(LINEAR, "ddpm", sigmas, ve(noise(1), sigmas), variance=variance)
    torch.testing.assert_close(expected, x, rtol=0, atol=TOLERANCE)


@pytest.mark.parametrize("spacing", ["leading", "trailing"])
@pytest.mark.parametrize("eta", [0.0, 1.0])
def test_ddim_matches_ddim_scheduler(spacing, eta):
    scheduler = diffusers.DDIMScheduler(beta_schedule="linear", clip_sample=False, set_alpha_to_one=True,
                                        steps_offset=0, timestep_spacing=spacing)
    scheduler = with_our_tables(scheduler, LINEAR)
    scheduler.set_timesteps(20)
    assert scheduler.timesteps.tolist() == spaced_timesteps(1000, 20, spacing).tolist()
    x, generator = noise(2), torch.Generator().manual_seed(0)
    for t in scheduler.timesteps:
        x = scheduler.step(model(x, t), t, x, eta=eta, generator=generator).prev_sample
    sigmas = make_grid(DiscreteSchedule(LINEAR), 20, spacing)
    expected = ours(LINEAR, "ddim", sigmas, ve(noise(2), sigmas), eta=eta)
    torch.testing.assert_close(expected, x, rtol=0, atol=TOLERANCE)


@pytest.mark.parametrize("name,scheduler_class",
                         [("euler", "EulerDiscreteScheduler"), ("heun", "HeunDiscreteScheduler")])
def test_euler_and_heun_match_karras_schedulers(name, scheduler_class):
    scheduler = with_our_tables(getattr(diffusers, scheduler_class)(
        beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear", use_karras_sigmas=True), SCALED)
    scheduler.set_timesteps(20)
    x = noise(3) * scheduler.init_noise_sigma
    for t in scheduler.timesteps:
        x = scheduler.step(model(scheduler.scale_model_input(x, t), t), t, x).prev_sample
    sigmas = scheduler.sigmas.double().unique_consecutive()  # Heun lists each intermediate level twice
    assert len(sigmas) == 21
    x_T = noise(3) * scheduler.init_noise_sigma  # Euler's and Heun's states are VE already
    torch.testing.assert_close(ours(SCALED, name, sigmas, x_T.double()), x.double(), rtol=0, atol=TOLERANCE)


def test_dpm2_matches_kdpm2_scheduler():
    scheduler = with_our_tables(diffusers.KDPM2DiscreteScheduler(beta_start=0.00085, beta_end=0.012,
                                                                  beta_schedule="scaled_linear"), SCALED)
    scheduler.set_timesteps(20)
    x = noise(3) * scheduler.init_noise_sigma
    for t in scheduler.timesteps:
        x = scheduler.step(model(scheduler.scale_model_input(x, t), t), t, x).prev_sample
    sigmas = scheduler.sigmas.double().unique_consecutive()  # it lists each level twice, its midpoints apart
    assert len(sigmas) == 21
    x_T = noise(3) * scheduler.init_noise_sigma
    torch.testing.assert_close(ours(SCALED, "dpm_2", sigmas, x_T.double()), x.double(), rtol=0, atol=TOLERANCE)


@pytest.mark.parametrize("algorithm,solver,name", [("dpmsolver++", "midpoint", "dpmpp_2m"),
                                                   ("sde-dpmsolver++", "midpoint", "dpmpp_2m_sde"),
                                                   ("sde-dpmsolver++", "heun", "dpmpp_2m_sde_heun")])
@pytest.mark.parametrize("steps", [8, 20])
def test_dpm_solver_pp_2m_matches_multistep_scheduler(algorithm, solver, name, steps):
    scheduler = with_our_tables(diffusers.DPMSolverMultistepScheduler(
        beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear", algorithm_type=algorithm, solver_order=2,
        solver_type=solver, final_sigmas_type="zero", timestep_spacing="trailing"), SCALED)
    scheduler.set_timesteps(steps)
    twin = torch.Generator().manual_seed(0)  # replays our sampler's draws: one per step that ends above sigma = 0
    x = noise(4)
    for i, t in enumerate(scheduler.timesteps):
        last = i == len(scheduler.timesteps) - 1
        z = torch.zeros(SHAPE, dtype=torch.float64) if last else torch.randn(SHAPE, generator=twin, dtype=torch.float64)
        x = scheduler.step(model(x, t), t, x, variance_noise=z).prev_sample
    sigmas = scheduler.sigmas.double()
    torch.testing.assert_close(ours(SCALED, name, sigmas, ve(noise(4), sigmas)), x.double(), rtol=0, atol=TOLERANCE)


@pytest.mark.parametrize("order", [1, 2, 3])
@pytest.mark.parametrize("solver_type,final", [("bh2", "zero"), ("bh2", "sigma_min"), ("bh1", "sigma_min")])
@pytest.mark.parametrize("steps", [8, 20])
def test_unipc_matches_unipc_multistep_scheduler(order, solver_type, final, steps):
    """(diffusers' bh1 to sigma = 0 gives NaN: its B(h) = -h is -inf there, times a zero difference term.)"""
    scheduler = with_our_tables(diffusers.UniPCMultistepScheduler(
        beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear", solver_order=order,
        solver_type=solver_type, predict_x0=True, lower_order_final=True, final_sigmas_type=final,
        timestep_spacing="trailing"), SCALED)
    scheduler.set_timesteps(steps)
    x = noise(5)
    for t in scheduler.timesteps:
        x = scheduler.step(model(x, t), t, x).prev_sample
    sigmas = scheduler.sigmas.double()
    got = ours(SCALED, "unipc", sigmas, ve(noise(5), sigmas), order=order, solver_type=solver_type)
    expected = x.double() * torch.sqrt(1 + sigmas[-1] ** 2)  # its state at sigmas[-1] in VE coordinates
    torch.testing.assert_close(got, expected, rtol=0, atol=TOLERANCE)
