"""Progressive distillation (Salimans & Ho 2022, Alg. 2) as an objective on the one trainer.

A round distils a teacher that takes DDIM steps on an N-step grid into a student that takes one DDIM step where
the teacher takes two, so the student's grid is every other level of the teacher's (N / 2 steps). Each round is a
component recording that grid (ExperimentConfig.student_grid); the next round's teacher is the previous student.
"""

from __future__ import annotations

import torch
from torch import nn

from difflab.denoiser import Denoiser
from difflab.errors import DifflabError
from difflab.grids import make_grid
from difflab.schedules import append_dims
from difflab.train.checkpoint import ComponentRef
from difflab.train.objective import Draw, Objective


def ddim_step(denoiser, x: torch.Tensor, sigma: torch.Tensor, sigma_next: torch.Tensor) -> torch.Tensor:
    """One DDIM (eta = 0) step in VE coordinates [B levels]: x' = x0_hat + sigma' (x - x0_hat) / sigma (Song et al.
    2021, Eq. 12 divided by alpha')."""
    x0_hat = denoiser(x, sigma)
    ratio = append_dims(sigma_next / sigma, x.ndim).to(x.dtype)
    return x0_hat + ratio * (x - x0_hat)


def distillation_target(teacher, x_t: torch.Tensor, t: torch.Tensor, t_mid: torch.Tensor,
                        t_next: torch.Tensor) -> torch.Tensor:
    """x~: the x0 whose single DDIM step t -> t_next lands where the teacher's two steps t -> t_mid -> t_next land.

    Salimans & Ho 2022, Alg. 2: x~ = (z'' - (sigma''/sigma) z_t) / (alpha'' - (sigma''/sigma) alpha_t); dividing
    z by alpha gives, in VE coordinates, x~ = (x'' - (t''/t) x_t) / (1 - t''/t) (x'' itself where t'' = 0).
    """
    x_two = ddim_step(teacher, ddim_step(teacher, x_t, t, t_mid), t_mid, t_next)
    ratio = append_dims(t_next / t, x_t.ndim).to(x_t.dtype)
    return (x_two - ratio * x_t) / (1 - ratio)


def truncated_snr_weight(t: torch.Tensor) -> torch.Tensor:
    # Salimans & Ho 2022, Sec. 4: w = max(SNR, 1) on ||x - x_hat||^2, with SNR = alpha^2 / sigma^2 = 1 / t^2 (VE)
    return torch.clamp(t.pow(-2), min=1.0)


def progressive_loss(student, teacher, x0: torch.Tensor, eps: torch.Tensor, t: torch.Tensor, t_mid: torch.Tensor,
                     t_next: torch.Tensor) -> torch.Tensor:
    """Per-sample max(SNR, 1) ||x~ - x_hat_student(x_t)||^2 / D at x_t = x0 + t eps; the target in float64."""
    x_t = x0.double() + append_dims(t, x0.ndim) * eps.double()
    with torch.no_grad():
        x_tilde = distillation_target(teacher, x_t, t, t_mid, t_next)
    x_hat = student(x_t.to(x0.dtype), t)
    error = (x_hat - x_tilde.to(x_hat.dtype)).pow(2).flatten(1).mean(1)
    return truncated_snr_weight(t).to(error.dtype) * error


def halve(teacher_grid: torch.Tensor) -> torch.Tensor:
    """Every other level of an even-step grid (ending in 0): the student's grid."""
    steps = len(teacher_grid) - 1
    if steps < 2 or steps % 2:
        raise DifflabError(f"progressive distillation halves an even number of teacher steps, got {steps}")
    return teacher_grid[::2]


def named_grid(schedule, kind: str, steps: int, sigmas: torch.Tensor) -> bool:
    """Whether `sigmas` is make_grid(schedule, steps, kind): the student's grid has a name `difflab sample` takes."""
    try:
        grid = make_grid(schedule, steps, kind)
    except DifflabError:
        return False
    return len(grid) == len(sigmas) and bool(torch.allclose(grid, sigmas.to(grid.dtype)))


class ProgressiveObjective(Objective):
    """One round: the student's DDIM step on level pair (2i, 2i + 2) of the teacher's grid matches two teacher steps."""

    def __init__(self, student: Denoiser, teacher: Denoiser, teacher_grid: torch.Tensor, teacher_ref: ComponentRef):
        halve(teacher_grid)  # checks the step count
        self.student, self.module = student, student.net
        self.teacher = teacher.eval().requires_grad_(False)
        self.grid = teacher_grid.to(torch.float64)
        self.frozen = {"teacher": teacher_ref}

    def draw(self, index, x0: torch.Tensor, labels, generator: torch.Generator) -> Draw:
        student_steps = (len(self.grid) - 1) // 2
        step = torch.randint(0, student_steps, (x0.shape[0],), generator=generator)
        return {"step": step, "eps": torch.randn(x0.shape, generator=generator, dtype=x0.dtype)}

    def bind(self, module: nn.Module) -> None:
        self.train_denoiser = Denoiser(module, self.student.precond)
        self.teacher.to(next(self.module.parameters()).device)

    def loss(self, x0: torch.Tensor, draw: Draw) -> tuple[torch.Tensor, None]:
        grid, step = self.grid.to(x0.device), draw["step"].to(x0.device)
        t, t_mid, t_next = grid[2 * step], grid[2 * step + 1], grid[2 * step + 2]
        return progressive_loss(self.train_denoiser, self.teacher, x0, draw["eps"], t, t_mid, t_next).float(), None
