"""A consistency model's training levels, recorded when training ends, and its re-noising levels, chosen by FD and
used by the consistency sampler where the caller names no grid."""

from __future__ import annotations

import math
import random

import pytest
import torch
from test_distill_resume import interrupt_after

from difflab.cli import main
from difflab.distill.consistency import ConsistencyRecipe, level_grid
from difflab.distill.levels import choose_renoise, ternary_search, training_levels, tune_levels
from difflab.distill.run import Budget, distill_consistency
from difflab.distill.student import ConsistencyLevels
from difflab.edit.img2img import plan_edit
from difflab.errors import DifflabError
from difflab.grids import make_grid
from difflab.model import load_model
from difflab.nets import build_network
from difflab.pipelines.dialect import Dialect
from difflab.pipelines.generate import generate
from difflab.pipelines.request import Request, plan_request
from difflab.serve.generation import WEB_UI_NAMES
from difflab.train.checkpoint import load_checkpoint, rewrite_config, save_checkpoint
from difflab.train.config import ExperimentConfig


@pytest.mark.parametrize("seed", range(20))
def test_ternary_search_finds_the_minimum_of_a_unimodal_score_scoring_each_point_once(seed):
    rng = random.Random(seed)
    lo, size = rng.randrange(5), rng.randrange(1, 40)
    best = lo + rng.randrange(size)
    slopes = [rng.uniform(0.1, 3) for _ in range(size)]
    scores = {i: sum(slopes[min(i, best) - lo: max(i, best) - lo]) for i in range(lo, lo + size)}  # unimodal at best
    scored = []

    def score(i: int) -> float:
        scored.append(i)
        return scores[i]

    assert ternary_search(score, lo, lo + size - 1) == best
    assert len(scored) == len(set(scored))
    assert len(scored) <= 2 * math.ceil(math.log(max(size, 2), 1.5)) + 3  # logarithmic, not all `size` points


TRAINED = tuple(level_grid(0.01, 80.0, 12, 7.0).flip(0).tolist())  # descending


def test_re_noising_levels_are_chosen_one_at_a_time_below_the_last():
    wanted = (TRAINED[6], TRAINED[8], TRAINED[9])

    def score(levels):  # best where each level is the wanted one; the earlier ones are already fixed
        assert levels[0] == TRAINED[0] and all(b < a for a, b in zip(levels, levels[1:]))
        assert TRAINED[-1] not in levels  # sigma_min, where f(x, sigma_min) = x, is no step
        return sum(abs(math.log(a / b)) for a, b in zip(levels[1:], wanted))

    chosen, probes = choose_renoise(TRAINED, 4, score)
    assert chosen == wanted
    assert len(probes) < 3 * (len(TRAINED) - 2)  # fewer probes than trying every level at every step
    assert all(set(levels) <= set(TRAINED) for levels, _ in probes)
    with pytest.raises(DifflabError, match=r"--steps must be 2 \.\. 11"):
        choose_renoise(TRAINED, 1, score)
    with pytest.raises(DifflabError, match=r"--steps must be 2 \.\. 11"):
        choose_renoise(TRAINED, 12, score)


def test_the_record_checks_its_levels_and_gives_those_of_each_step_count():
    levels = ConsistencyLevels(TRAINED, (TRAINED[5], TRAINED[8]))
    assert levels.sampling(1) == (TRAINED[0],)
    assert levels.sampling(3) == (TRAINED[0], TRAINED[5], TRAINED[8])
    assert levels.sampling(4) is None and ConsistencyLevels(TRAINED).sampling(2) is None
    config = ExperimentConfig(consistency_levels=levels)
    assert ExperimentConfig.from_dict(config.to_dict()) == config
    with pytest.raises(DifflabError, match="decreasing"):
        ConsistencyLevels(TRAINED[::-1])
    with pytest.raises(DifflabError, match="renoise must decrease"):
        ConsistencyLevels(TRAINED, (TRAINED[8], TRAINED[5]))


@pytest.fixture
def student(random_teacher, tmp_path):
    """A consistency model distilled for two steps from a tiny random teacher, at N = 8 levels."""
    return distill_consistency(random_teacher, tmp_path / "cd", ConsistencyRecipe(levels=8), Budget(steps=2, batch=4),
                               progress=False)


def test_training_records_its_levels_and_tuning_records_the_chosen_ones(student, capsys):
    model = load_model(student)
    denoiser, config = model.denoiser, model.checkpoint.config
    trained = level_grid(config.precond.sigma_min, denoiser.sigma_max, 8, 7.0).flip(0)
    assert config.consistency_levels == ConsistencyLevels(tuple(trained.tolist()))
    assert training_levels(model) == config.consistency_levels.trained
    with pytest.raises(DifflabError, match="records the levels it was trained at; leave --levels out"):
        training_levels(model, 8)
    before = load_checkpoint(student).tensors
    sample = ["sample", str(student), "--sampler", "consistency", "--n", "2", "--out", str(student.parent / "s.png"),
              "--threads", "1"]
    assert main(sample) == 0
    assert "(consistency, 1 steps" in capsys.readouterr().out  # no levels chosen yet: one step from the prior

    assert main(["distill", "levels", str(student), "--steps", "3", "--n", "8", "--batch", "8"]) == 0
    out = capsys.readouterr().out
    chosen = load_model(student).checkpoint.config.consistency_levels
    assert chosen.trained == config.consistency_levels.trained and len(chosen.renoise) == 2
    assert f"3 steps: --sigmas {','.join(repr(s) for s in chosen.sampling(3))}" in out
    assert out.count("FD ") >= 2
    after = load_checkpoint(student).tensors  # the weights are untouched
    assert after.keys() == before.keys() and all(torch.equal(after[k], before[k]) for k in before)

    config = load_model(student).checkpoint.config
    plan = plan_request(Request(sampler="consistency", steps=2), denoiser, config)
    assert plan.levels == chosen.sampling(2)
    assert torch.equal(plan.grid(), torch.tensor([*chosen.sampling(2), 0.0], dtype=torch.float64))
    lcm = plan_request(Request(sampler="LCM", steps=3), denoiser, config, Dialect(WEB_UI_NAMES, web_ui=True))
    assert lcm.levels == chosen.sampling(3)  # the web UI's LCM with its Automatic scheduler
    for request in (Request(sampler="consistency", steps=4),  # more steps than chosen: the sampler's grid
                    Request(sampler="consistency", steps=2, grid="karras"),  # a grid of the caller's choosing
                    Request(sampler="LCM Karras", steps=2),  # ... or a scheduler in the name
                    Request(sampler="ddim", steps=2)):
        assert plan_request(request, denoiser, config).levels is None
    given = (denoiser.sigma_max, 1.0)
    assert plan_request(Request(sampler="consistency", steps=2, sigmas=given), denoiser, config).levels == given
    assert main(sample) == 0
    assert "(consistency, 3 steps" in capsys.readouterr().out  # the most steps the chosen levels cover
    edit = plan_edit(plan, load_model(student), torch.zeros(1, 1, 28, 28), 0.5)  # img2img cuts its own grid
    assert edit.plan.levels is None and edit.sample().shape == (1, 1, 28, 28)


def test_a_model_without_recorded_levels_needs_their_count(student):
    config = load_model(student).checkpoint.config
    rewrite_config(student, ExperimentConfig.from_dict({**config.to_dict(), "consistency_levels": None}))
    model = load_model(student)
    with pytest.raises(DifflabError, match="give --levels N"):
        training_levels(model)
    assert training_levels(model, 8) == config.consistency_levels.trained
    chosen, probes = tune_levels(student, 2, n=8, batch=8, levels=8)
    assert len(chosen.renoise) == 1 and all(len(levels) == 2 for levels, _ in probes)
    assert load_model(student).checkpoint.config.consistency_levels == chosen


def test_only_consistency_models_of_fashion_mnist_images_are_tuned(tmp_path, tiny_unet_spec):
    config = ExperimentConfig.from_dict({"network": tiny_unet_spec})
    save_checkpoint(tmp_path / "model.safetensors", config, 0, model=build_network(config.network))
    with pytest.raises(DifflabError, match="is not a consistency model"):
        tune_levels(tmp_path / "model.safetensors", 2)


def test_levels_chosen_on_an_interrupted_run_do_not_stop_its_resume(random_teacher, student, monkeypatch):
    out = student.parent.parent / "interrupted"
    run = {"recipe": ConsistencyRecipe(levels=8), "budget": Budget(steps=2, batch=4), "progress": False}
    with monkeypatch.context() as patch:
        interrupt_after(patch, 1)
        with pytest.raises(KeyboardInterrupt):
            distill_consistency(random_teacher, out, **run)
    assert load_checkpoint(out / "student.safetensors").optimizer_groups is not None  # resumable ...
    tune_levels(out / "student.safetensors", 2, n=8, batch=8, levels=8)  # ... and tuned meanwhile
    resumed = distill_consistency(random_teacher, out, **run, resume=True)
    recorded = load_model(resumed).checkpoint.config.consistency_levels  # training moved f: the choice is dropped
    assert recorded == load_model(student).checkpoint.config.consistency_levels and recorded.renoise == ()


def test_the_consistency_sampler_never_re_noises_at_sigma_min_on_a_named_grid(student):
    """The CLI/web plan and Python's generate both ask make_grid for re-noising levels: a 2-step Karras grid re-noises
    above sigma_min (f(x, sigma_min) = x would repeat the 1-step sample), while other samplers keep sigma_min."""
    model = load_model(student)
    denoiser, config = model.denoiser, model.checkpoint.config
    karras3 = make_grid(denoiser.schedule, 3, "karras")
    plan = plan_request(Request(sampler="consistency", steps=2, grid="karras"), denoiser, config)
    assert torch.equal(plan.grid(), torch.stack([karras3[0], karras3[1], karras3[3]]))
    ddim = plan_request(Request(sampler="ddim", steps=2, grid="karras"), denoiser, config)
    assert float(ddim.grid()[-2]) == pytest.approx(denoiser.sigma_min, rel=1e-9)
    named, given = (generate(denoiser, (1, 28, 28), 2, sampler="consistency", steps=2, seed=0, **grid)
                    for grid in ({"grid": "karras"}, {"levels": karras3[:2].tolist()}))
    assert torch.equal(named, given)
