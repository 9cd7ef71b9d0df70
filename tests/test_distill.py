"""Progressive distillation: the two-step teacher is a round's fixed point, and students refuse other grids."""

from __future__ import annotations

from dataclasses import replace

import pytest
import torch
from samplers_exact import GaussianDenoiser

from difflab.commands import BUNDLED_MODEL
from difflab.distill.progressive import halve, named_grid, progressive_loss
from difflab.distill.run import Budget, distill_progressive
from difflab.distill.student import StudentGrid
from difflab.errors import DifflabError
from difflab.grids import make_grid
from difflab.model import load_model
from difflab.pipelines.dialect import Dialect, RequestError
from difflab.pipelines.request import Request, plan_request
from difflab.samplers import SAMPLERS
from difflab.schedules import DiscreteSchedule
from difflab.serve.generation import WEB_UI_NAMES

MU, S2 = 0.2, 0.3


def slope(t: float, t_next: float) -> float:
    """d x' / d x of one DDIM step t -> t_next on x0 ~ N(MU, S2): gain g = S2 / (S2 + t^2), x' = D + (t'/t)(x - D)."""
    gain = S2 / (S2 + t**2)
    return gain + (t_next / t) * (1 - gain)


class GaussianStudent:
    """The closed-form student of one round: at each of its levels t (next level t''), D_s = MU + c (x - MU) with c
    chosen so that its one DDIM step has the teacher's two-step slope A: c + (t''/t)(1 - c) = A."""

    def __init__(self, teacher_grid: torch.Tensor, error: float = 0.0):
        self.c = {}
        for i in range(0, len(teacher_grid) - 1, 2):
            t, t_mid, t_next = (float(s) for s in teacher_grid[i: i + 3])
            ratio, two_steps = t_next / t, slope(t, t_mid) * slope(t_mid, t_next)
            self.c[t] = (two_steps - ratio) / (1 - ratio) + error

    def __call__(self, x, sigma):
        c = torch.tensor([self.c[float(s)] for s in sigma], dtype=x.dtype).view(-1, *[1] * (x.ndim - 1))
        return MU + c * (x - MU)


def test_the_two_step_teacher_is_the_fixed_point_of_a_round():
    teacher, grid = GaussianDenoiser(MU, S2), make_grid(DiscreteSchedule(), 16, "trailing")
    student_grid = halve(grid)
    x0 = MU + S2**0.5 * torch.randn(64, 1, 2, 2, dtype=torch.float64)
    eps = torch.randn_like(x0)
    pairs = torch.arange(8).repeat(8)  # every student step, 8 samples each
    t, t_mid, t_next = grid[2 * pairs], grid[2 * pairs + 1], grid[2 * pairs + 2]
    exact = progressive_loss(GaussianStudent(grid), teacher, x0, eps, t, t_mid, t_next)
    assert float(exact.max()) < 1e-20  # the two-step student has zero loss everywhere ...
    off = progressive_loss(GaussianStudent(grid, error=1e-3), teacher, x0, eps, t, t_mid, t_next)
    assert float(off.min()) > 0  # ... and any other does not
    # and its DDIM chain on the halved grid is the teacher's on the full one
    x_T = torch.randn(5, 1, 2, 2, dtype=torch.float64) * float(grid[0])
    torch.testing.assert_close(SAMPLERS["ddim"].fn(GaussianStudent(grid), x_T, student_grid),
                               SAMPLERS["ddim"].fn(teacher, x_T, grid), rtol=1e-10, atol=1e-10)


def test_halving_keeps_trailing_power_of_two_grids_and_not_others():
    schedule = DiscreteSchedule()
    assert named_grid(schedule, "trailing", 8, halve(make_grid(schedule, 16, "trailing")))
    assert not named_grid(schedule, "linspace", 8, halve(make_grid(schedule, 16, "linspace")))
    with pytest.raises(DifflabError, match="halves an even number of teacher steps"):
        halve(make_grid(schedule, 5, "trailing"))


def test_distill_refuses_grids_it_cannot_halve(tmp_path):
    with pytest.raises(DifflabError, match="cannot be halved 3 times"):
        distill_progressive(BUNDLED_MODEL, tmp_path, 3, 12, Budget(steps=1))
    with pytest.raises(DifflabError, match="is not the 8-step linspace grid"):
        distill_progressive(BUNDLED_MODEL, tmp_path, 1, 16, Budget(steps=1), grid="linspace")


def test_a_student_samples_only_on_its_grid_with_ddim():
    model = load_model(BUNDLED_MODEL)
    schedule = model.denoiser.schedule
    student = replace(model.checkpoint.config,
                      student_grid=StudentGrid("trailing", 2, tuple(make_grid(schedule, 2, "trailing").tolist())))
    plan_request(Request(steps=2, sampler="ddim"), model.denoiser, student)  # its own grid
    with pytest.raises(RequestError, match="valid only on the 2-step trailing grid .* use --steps 2 --grid trailing"):
        plan_request(Request(steps=4, sampler="ddim"), model.denoiser, student)
    with pytest.raises(RequestError, match="valid only on the 2-step trailing grid"):
        plan_request(Request(steps=2, sampler="ddim", grid="karras"), model.denoiser, student)
    with pytest.raises(RequestError, match="takes DDIM steps"):
        plan_request(Request(steps=2, sampler="dpmpp_2m"), model.denoiser, student)
    assert StudentGrid(kind="trailing", steps=2, sigmas=[2.0, 1.0, 0.0]).flags() == \
        "--steps 2 --grid trailing"
    web_ui = Dialect(WEB_UI_NAMES, web_ui=True)  # the server's: its remedies name its fields
    with pytest.raises(RequestError, match="valid only on the 2-step trailing grid .* use steps 2 with scheduler "
                                           "Automatic"):
        plan_request(Request(steps=4, sampler="DDIM"), model.denoiser, student, web_ui)
    with pytest.raises(RequestError, match="use sampler_name DDIM or Euler or ParaDiGMS DDIM, not 'dpmpp_2m'"):
        plan_request(Request(steps=2, sampler="DPM++ 2M"), model.denoiser, student, web_ui)


@pytest.fixture
def tiny_teacher(tmp_path, tiny_unet_spec):
    """A tiny untrained VP teacher component on disk."""
    from difflab.nets import build_network
    from difflab.train.checkpoint import save_checkpoint
    from difflab.train.config import ExperimentConfig

    config = ExperimentConfig.from_dict({"network": tiny_unet_spec, "train": {"batch": 4}})
    path = tmp_path / "teacher" / "model.safetensors"
    path.parent.mkdir()
    save_checkpoint(path, config, 0, model=build_network(config.network))
    return path


def test_students_are_components_referring_to_their_frozen_teacher(tiny_teacher, tmp_path):
    from difflab.distill.consistency import ConsistencyRecipe
    from difflab.distill.run import distill_consistency
    from difflab.pipelines.generate import generate

    budget = Budget(steps=2, batch=4)
    rounds = distill_progressive(tiny_teacher, tmp_path / "pd", 2, 4, budget, prediction="v", progress=False)
    first, second = (load_model(path) for path in rounds)
    assert first.checkpoint.refs["teacher"].path == str(tiny_teacher.resolve())
    assert second.checkpoint.refs["teacher"].path == str(rounds[0].resolve())  # the previous round is its teacher
    assert (first.checkpoint.config.student_grid.steps, second.checkpoint.config.student_grid.steps) == (2, 1)
    assert second.checkpoint.config.prediction == "v"
    cd = load_model(distill_consistency(tiny_teacher, tmp_path / "cd", ConsistencyRecipe(), budget, progress=False))
    assert cd.denoiser.precond.kind == "consistency" and "teacher" in cd.checkpoint.refs
    assert cd.checkpoint.config.prediction == "v"  # the default, whatever the teacher predicts (eps here)
    assert generate(cd.denoiser, (1, 28, 28), 2, sampler="consistency", steps=1).shape == (2, 1, 28, 28)
