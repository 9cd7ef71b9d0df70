"""--resume for the distillation runs: an interrupted, then resumed run equals the uninterrupted one bit for bit."""

from __future__ import annotations

from dataclasses import replace

import pytest
import torch

from difflab.cli import main
from difflab.distill.consistency import ConsistencyRecipe
from difflab.distill.run import Budget, distill_consistency, distill_progressive, init_student, student_net
from difflab.errors import DifflabError
from difflab.train.checkpoint import load_checkpoint
from difflab.train.loop import TrainingLoop

BUDGET = Budget(steps=2, batch=4)


def interrupt_after(monkeypatch, calls: int) -> None:
    """Ctrl-C before the training step after `calls` steps in all (counted across rounds)."""
    train_step, done = TrainingLoop.train_step, []

    def interrupted(self):
        if len(done) == calls:
            raise KeyboardInterrupt
        done.append(self.step)
        return train_step(self)

    monkeypatch.setattr(TrainingLoop, "train_step", interrupted)


def assert_same_student(a, b, teacher) -> None:
    a, b, teacher = load_checkpoint(a), load_checkpoint(b), load_checkpoint(teacher)
    assert a.step == b.step and a.optimizer_groups is None and b.optimizer_groups is None
    assert a.tensors.keys() == b.tensors.keys()
    for key, value in a.tensors.items():
        assert torch.equal(value, b.tensors[key]), key
    assert any(not torch.equal(value, teacher.section("model")[key]) for key, value in a.section("model").items())


def test_progressive_resumes_exactly_across_rounds(random_teacher, tmp_path, monkeypatch):
    run = {"rounds": 2, "teacher_steps": 4, "budget": BUDGET, "progress": False}
    straight = distill_progressive(random_teacher, tmp_path / "straight", **run)
    with monkeypatch.context() as patch:
        interrupt_after(patch, 3)  # round 1 done, round 2 interrupted after its first step
        with pytest.raises(KeyboardInterrupt):
            distill_progressive(random_teacher, tmp_path / "resumed", **run)
    assert load_checkpoint(tmp_path / "resumed" / "round_2" / "student.safetensors").step == 1
    resumed = distill_progressive(random_teacher, tmp_path / "resumed", **run, resume=True)
    for teacher_path, a, b in zip([random_teacher, *straight], straight, resumed):
        assert_same_student(a, b, teacher_path)


def test_consistency_distillation_resumes_exactly_and_refuses_other_settings(random_teacher, tmp_path, monkeypatch):
    recipe = ConsistencyRecipe(levels=6, mu=0.9)  # with the EMA target, the objective's own state
    straight = distill_consistency(random_teacher, tmp_path / "straight", recipe, BUDGET, progress=False)
    with monkeypatch.context() as patch:
        interrupt_after(patch, 1)
        with pytest.raises(KeyboardInterrupt):
            distill_consistency(random_teacher, tmp_path / "resumed", recipe, BUDGET, progress=False)
    out = tmp_path / "resumed"
    with pytest.raises(DifflabError, match=r"another consistency recipe \(metric\)"):
        distill_consistency(random_teacher, out, ConsistencyRecipe(levels=6, mu=0.9, metric="l2"), BUDGET,
                            progress=False, resume=True)
    with pytest.raises(DifflabError, match=r"other settings \(train.lr\); give the flags"):
        distill_consistency(random_teacher, out, recipe, Budget(steps=2, batch=4, lr=1e-3), progress=False,
                            resume=True)
    assert main(["distill", "consistency", "--teacher", str(random_teacher), "--out", str(out), "--levels", "6",
                 "--mu", "0.9", "--steps", "2", "--batch", "4", "--resume"]) == 0
    assert_same_student(straight, out / "student.safetensors", random_teacher)
    with pytest.raises(DifflabError, match="finished denoiser .*nothing to resume"):
        distill_consistency(random_teacher, out, recipe, BUDGET, progress=False, resume=True)


def test_consistency_distillation_continues_a_student_in_a_new_run(random_teacher, tmp_path, capsys):
    """--init STUDENT: a new run (here with cosine lr decay and another EMA) starts from the student's EMA weights and
    records the file; a teacher or a student of another prediction is refused in one line."""
    recipe = ConsistencyRecipe(levels=6, mu=0.9)
    first = distill_consistency(random_teacher, tmp_path / "first", recipe, BUDGET, progress=False)
    longer = Budget(steps=2, batch=4, lr_decay="cosine", ema_decay=0.999)
    theirs = load_checkpoint(first).config
    config = init_student(first, replace(theirs, train=replace(theirs.train, **longer.loop())))
    ema = load_checkpoint(first).section("ema")
    for key, value in student_net(config, None).state_dict().items():
        assert torch.equal(value, ema[key]), key
    second = distill_consistency(random_teacher, tmp_path / "second", recipe, longer, init=str(first), progress=False)
    saved = load_checkpoint(second).config.train
    assert (saved.init_from, saved.lr_decay, saved.ema_decay) == (str(first.resolve()), "cosine", 0.999)
    with pytest.raises(DifflabError, match="not a consistency model"):
        distill_consistency(random_teacher, tmp_path / "x", recipe, BUDGET, init=str(random_teacher), progress=False)
    with pytest.raises(DifflabError, match=r"other settings \(prediction\)"):
        distill_consistency(random_teacher, tmp_path / "x", recipe, BUDGET, init=str(first), prediction="eps",
                            progress=False)
    assert main(["distill", "consistency", "--teacher", str(random_teacher), "--init", "teachr", "--steps", "1"]) == 2
    assert "--init: teachr is neither teacher, scratch nor a file" in capsys.readouterr().err
