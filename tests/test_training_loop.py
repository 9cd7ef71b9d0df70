"""The one training loop with objectives of its own: frozen components referred to, never trained or copied."""

import json

import torch
import pytest
from safetensors import safe_open

from difflab.data import load_dataset
from difflab.errors import DifflabError
from difflab.objectives import mean_flat
from difflab.train.checkpoint import ComponentRef, load_checkpoint, load_denoiser
from difflab.train.loop import TrainingLoop
from difflab.train.objective import Objective
from difflab.train.recipe import LoopConfig
from difflab.train.trainer import Trainer

from test_training import toy_config


class MatchTeacher(Objective):
    """A student network regresses on a frozen teacher's x0_hat at random levels (a distillation in miniature)."""

    def __init__(self, student: torch.nn.Module, teacher_path):
        self.teacher, _ = load_denoiser(teacher_path)
        self.teacher.requires_grad_(False)
        self.module = student
        self.frozen = {"teacher": ComponentRef.to("denoiser", teacher_path)}

    def draw(self, index, x0, labels, generator):
        return {"sigma": torch.rand(len(x0), generator=generator) * 5 + 0.1}

    def loss(self, x0, draw):
        x = x0 + draw["sigma"][:, None] * torch.randn_like(x0)
        with torch.no_grad():
            target = self.teacher(x, draw["sigma"])
        return mean_flat((self.train_module(x, draw["sigma"]) - target) ** 2), None


class Student(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.net = torch.nn.Sequential(torch.nn.Linear(3, 32), torch.nn.SiLU(), torch.nn.Linear(32, 2))

    def forward(self, x, sigma):
        return self.net(torch.cat([x, sigma[:, None].log()], dim=1))


class Spec:
    def to_dict(self):
        return {"student": "mlp"}


@pytest.fixture(scope="module")
def teacher(tmp_path_factory):
    out = tmp_path_factory.mktemp("teacher")
    return Trainer(toy_config(steps=20), out, progress=False).run().checkpoint


def test_a_frozen_component_is_neither_updated_nor_copied(teacher, tmp_path):
    before = dict(load_checkpoint(teacher).tensors)
    objective = MatchTeacher(Student(), teacher)
    teacher_weights = {k: v.clone() for k, v in objective.teacher.state_dict().items()}
    cfg = LoopConfig(data="toy:8gaussians", steps=30, batch=64, lr=1e-2, warmup=1, log_every=10)
    loop = TrainingLoop(objective, load_dataset("toy:8gaussians", "train"), cfg, tmp_path, kind="student",
                        config=Spec(), checkpoint_name="student.safetensors", progress=False)
    path = loop.run()
    for name, value in objective.teacher.state_dict().items():
        assert torch.equal(value, teacher_weights[name]), name  # not trained
    assert all(torch.equal(v, load_checkpoint(teacher).tensors[k]) for k, v in before.items())  # file untouched
    with safe_open(path, "pt") as f:
        keys, metadata = set(f.keys()), f.metadata()
    student_keys = {f"model.{k}" for k in Student().state_dict()}
    assert student_keys <= keys and {k for k in keys if k.startswith(("model.", "ema."))} == student_keys | {
        f"ema.{k}" for k in Student().state_dict()}  # the student's weights only: no teacher tensor copied
    assert sum(f.numel() for f in objective.teacher.parameters()) > 0
    refs = json.loads(metadata["refs"])
    assert refs["teacher"]["kind"] == "denoiser" and refs["teacher"]["sha256"] == ComponentRef.to("denoiser",
                                                                                                    teacher).sha256
    log = [json.loads(line) for line in (tmp_path / "log.jsonl").read_text().splitlines()]
    assert log[-1]["loss"] < log[0]["loss"]


def test_a_changed_frozen_component_is_refused(teacher, tmp_path):
    ref = ComponentRef.to("denoiser", teacher)
    assert ref.check("teacher") == teacher.resolve()
    copy = tmp_path / "teacher.safetensors"
    copy.write_bytes(teacher.read_bytes())
    moved = ComponentRef.to("denoiser", copy)
    copy.write_bytes(teacher.read_bytes() + b" ")
    with pytest.raises(DifflabError, match="'teacher' at .* has changed since it was referred to"):
        moved.check("teacher")
    copy.unlink()
    with pytest.raises(DifflabError, match="frozen component 'teacher' \\(denoiser\\) not found"):
        moved.check("teacher")


def test_only_trainable_parameters_move(tmp_path):
    trainer = Trainer(toy_config(steps=5), tmp_path, progress=False)
    frozen = trainer.denoiser.net.inp
    frozen.requires_grad_(False)
    trainer.loop.optimizer = torch.optim.AdamW(trainer.objective.param_groups(), lr=1e-2)
    before = {k: v.clone() for k, v in frozen.state_dict().items()}
    for _ in range(3):
        trainer.train_step()
    assert all(torch.equal(v, before[k]) for k, v in frozen.state_dict().items())
    assert all(p.requires_grad for group in trainer.loop.optimizer.param_groups for p in group["params"])
