"""A refiner: a second denoiser that takes over the low-noise end of one sampler run (the SDXL refiner; the web UI's
refiner_checkpoint and refiner_switch_at).

The switch is a denoiser switch inside the one sampler run, as in the web UI (modules/sd_samplers_common.py
apply_refiner swaps the model under the running k-diffusion sampler): every evaluation at a level past the switch
goes to the refiner, whatever the sampler. A multistep solver's history (DPM++ 2M's previous x0_hat, LMS's
derivatives) carries on across the switch: the refiner's first step combines its own x0_hat with the base model's
last one. A second-order step that straddles the switch (Heun, DPM-2) evaluates its corrector with the refiner.

Which levels are past the switch is the web UI's default rule (refiner_switch_by_sample_steps off): a level's
completed fraction is (T - 1 - t) / T at its nearest training timestep t of the base model's schedule, and the
refiner takes every level whose fraction is >= refiner_switch_at. On a trailing grid that is the last
(1 - refiner_switch_at) share of the steps.
"""

from __future__ import annotations

import torch

from difflab.conditioning import Condition
from difflab.denoiser import Denoiser
from difflab.errors import DifflabError
from difflab.schedules import DiscreteSchedule
from difflab.train.config import ExperimentConfig


def completed_fraction(schedule: DiscreteSchedule, sigma: torch.Tensor) -> torch.Tensor:
    """(T - 1 - t) / T for the training timestep t nearest each level sigma [B] (A1111 apply_refiner)."""
    table = schedule.sigmas.to(sigma.device, torch.float64)
    t = (table[None] - sigma.to(torch.float64)[:, None]).abs().argmin(dim=1)
    return (schedule.timesteps - 1 - t).double() / schedule.timesteps


class Refined(Denoiser):
    """D(x, sigma) of `base` above the switch, of `refiner` at the levels past it; reports the base's schedule,
    preconditioning and variance to the samplers. A refiner equal to the base gives the base's trajectory exactly."""

    def __init__(self, base: Denoiser, refiner: Denoiser, switch_at: float):
        if not isinstance(base.schedule, DiscreteSchedule):
            raise DifflabError("--refiner-switch-at counts the base model's training timesteps: it needs a model with "
                               "a discrete (vp) schedule")
        if not 0 <= switch_at <= 1:
            raise DifflabError(f"--refiner-switch-at must lie in [0, 1] (the share of the trajectory the base model "
                               f"runs), got {switch_at}")
        super().__init__(base.net, base.precond, base.learned_variance)
        self.refiner, self.switch_at = refiner, switch_at

    def past_switch(self, sigma: torch.Tensor) -> torch.Tensor:
        """[B] bool: levels the refiner takes."""
        return completed_fraction(self.schedule, sigma) >= self.switch_at

    def with_variance(self, x: torch.Tensor, sigma: torch.Tensor,
                      cond: Condition | None = None) -> tuple[torch.Tensor, torch.Tensor | None]:
        if sigma.ndim == 0:
            sigma = sigma.expand(x.shape[0])
        past = self.past_switch(sigma)
        if not past.any():
            return super().with_variance(x, sigma, cond)
        if past.all():
            x0_hat, v = self.refiner.with_variance(x, sigma, cond)
            return x0_hat, v if self.learned_variance else None  # the samplers use the variance the base declares
        # rows on both sides of the switch (per-row levels): each side from its own model
        base, refined = super().with_variance(x, sigma, cond), self.refiner.with_variance(x, sigma, cond)
        rows = past.view(-1, *[1] * (x.ndim - 1))
        v = torch.where(rows, refined[1], base[1]) if self.learned_variance and refined[1] is not None else base[1]
        return torch.where(rows, refined[0], base[0]), v


def check_refiner(base: ExperimentConfig, refiner: ExperimentConfig, kinds: frozenset[str]) -> None:
    """A refiner must make the base's samples (same shape) and accept the request's condition kinds."""
    if tuple(refiner.data_shape) != tuple(base.data_shape):
        raise DifflabError(f"--refiner makes {list(refiner.data_shape)} samples, the model "
                           f"{list(base.data_shape)}: a refiner must take over the same images")
    check_accepts(refiner, kinds, "--refiner")


def check_accepts(config: ExperimentConfig, kinds: frozenset[str], flag: str) -> None:
    """A second model (`flag`: --refiner, --hires-model) must accept the request's condition kinds."""
    missing = set(kinds) - set(config.network.accepts)
    if missing:
        raise DifflabError(f"{flag} does not accept the request's {', '.join(sorted(missing))} condition; use a "
                           f"model trained with it")
