"""Running a distillation on the one trainer: the frozen teacher (referred to, never copied), the student's config
and initial weights, and the finished student component. An interrupted run (Ctrl-C, SIGTERM) saves its whole state;
the same command with `resume` continues it exactly (its budget, --steps and --minutes, may change)."""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path

import torch

from difflab.data import load_dataset
from difflab.denoiser import ConsistencyConfig, Denoiser
from difflab.distill.consistency import ConsistencyObjective, ConsistencyRecipe
from difflab.distill.progressive import ProgressiveObjective, halve, named_grid
from difflab.distill.student import StudentGrid
from difflab.errors import DifflabError
from difflab.grids import make_grid
from difflab.model import load_model
from difflab.nets import build_network, network_spec
from difflab.train.checkpoint import (Checkpoint, ComponentRef, build_denoiser, init_weights, load_checkpoint,
                                     save_checkpoint, unfinished_run)
from difflab.train.config import ExperimentConfig
from difflab.train.loop import TrainingLoop
from difflab.train.objective import Objective

CHECKPOINT = "student.safetensors"


@dataclass(frozen=True)
class Budget:
    """The loop settings of a distillation run (the rest of the recipe is the teacher's)."""

    steps: int | None = 400
    minutes: float | None = None
    batch: int = 64
    lr: float = 1e-4
    lr_decay: str = "constant"  # or cosine, to 0 at `steps`
    warmup: int = 0
    ema_decay: float = 0.99
    seed: int = 0

    def loop(self) -> dict:
        return {"steps": self.steps, "minutes": self.minutes, "batch": self.batch, "lr": self.lr,
                "lr_decay": self.lr_decay, "warmup": self.warmup, "ema_decay": self.ema_decay, "seed": self.seed,
                "checkpoint_every": 10**9}


@dataclass(frozen=True)
class Teacher:
    denoiser: Denoiser
    config: ExperimentConfig
    ref: ComponentRef  # the frozen teacher file, by path and sha256


def load_teacher(path: str | Path) -> Teacher:
    model = load_model(path)
    config = model.checkpoint.config
    if getattr(model, "latent", None) is not None or config.train.cond != "none":
        raise DifflabError("--teacher: distillation here takes an unconditional pixel-space model")
    if config.precond.kind == "consistency":
        raise DifflabError("--teacher is a consistency model; distil from a diffusion model")
    return Teacher(model.denoiser.eval().requires_grad_(False), config,
                   ComponentRef.to("denoiser", model.files["denoiser"]))


def student_net(config: ExperimentConfig, init: Teacher | None) -> torch.nn.Module:
    """The student's network: from config.train.init_from's EMA weights (a student continued in a new run), else from
    the teacher's weights (init), else fresh from the config's seed."""
    torch.manual_seed(config.train.seed)
    net = build_network(config.network)
    if config.train.init_from is not None:
        init_weights(net, config.train.init_from)
    elif init is not None:
        net.load_state_dict(init.denoiser.net.state_dict())
    return net  # TrainingLoop gives it its memory layout


def init_student(path: str | Path, config: ExperimentConfig) -> ExperimentConfig:
    """`config` starting from the consistency model at `path` (--init STUDENT): it must be one this command could have
    trained (the same network, scalings and prediction); its file is recorded as train.init_from."""
    if not Path(path).is_file():
        raise DifflabError(f"--init: {path} is neither teacher, scratch nor a file")
    theirs = load_checkpoint(path).config
    if theirs.precond.kind != "consistency":
        raise DifflabError(f"--init {path}: not a consistency model (give teacher, scratch or a student)")
    differ = [name for name in ("network", "precond", "prediction", "data_shape")
              if getattr(theirs, name) != getattr(config, name)]
    if differ:
        raise DifflabError(f"--init {path}: a student with other settings ({', '.join(differ)}) than this teacher's "
                           f"with --prediction {config.prediction}")
    return replace(config, train=replace(config.train, init_from=str(Path(path).resolve())))


def differences(ours: dict, theirs: dict, prefix: str = "") -> list[str]:
    """The dotted keys whose values differ between two config dicts."""
    found = []
    for key in sorted(set(ours) | set(theirs)):
        a, b = ours.get(key), theirs.get(key)
        if isinstance(a, dict) and isinstance(b, dict):
            found += differences(a, b, f"{prefix}{key}.")
        elif a != b:
            found.append(prefix + key)
    return found


def check_same_run(saved: Checkpoint, path: Path, config: ExperimentConfig, objective: Objective) -> None:
    """Refuse, in one line, to resume a run saved at `path` that this command would not have started: another config
    (but for the budget) or another frozen teacher."""
    budget = {"steps": saved.config.train.steps, "minutes": saved.config.train.minutes}
    # the budget may change, and the levels recorded (difflab distill levels) are an outcome, not a setting
    ours = replace(config, train=replace(config.train, **budget), consistency_levels=saved.config.consistency_levels)
    differ = differences(ours.to_dict(), saved.config.to_dict())
    if differ:
        raise DifflabError(f"--resume: the run saved at {path} has other settings ({', '.join(differ)}); give the "
                           f"flags it was started with (only --steps and --minutes may change)")
    if saved.refs != objective.frozen:
        raise DifflabError(f"--resume: the run saved at {path} distils another teacher (or the teacher file has "
                           f"changed since); give its --teacher")


def train_student(objective: Objective, config: ExperimentConfig, out: str | Path, progress: bool = True,
                  resume: bool = False) -> Path:
    """Run the objective on the teacher's data and write OUT/student.safetensors: the student's weights and EMA,
    its config, and the frozen teacher referred to by path and sha256. `resume` continues the interrupted run saved
    there exactly."""
    train = config.train
    saved = unfinished_run(Path(out) / CHECKPOINT, "denoiser") if resume else None
    if saved is not None:
        check_same_run(saved, Path(out) / CHECKPOINT, config, objective)
    data = load_dataset(train.data, "train", train.data_root, seed=train.seed)
    loop = TrainingLoop(objective, data, train, Path(out), kind="denoiser", config=config,
                        checkpoint_name=CHECKPOINT, progress=progress)
    if saved is not None:
        loop.restore(saved)
    loop.run()
    if isinstance(objective, ConsistencyObjective):  # where f was fitted, for choosing its re-noising levels
        config = replace(config, consistency_levels=objective.trained_levels())
    path = Path(out) / CHECKPOINT
    save_checkpoint(path, config, loop.step, model=objective.module, ema=loop.ema.model, refs=objective.frozen)
    return path


def distill_consistency(teacher_path: str | Path, out: str | Path, recipe: ConsistencyRecipe, budget: Budget, *,
                        init: str = "teacher", prediction: str | None = "v", progress: bool = True,
                        resume: bool = False) -> Path:
    """Consistency distillation (Song et al. 2023, Alg. 2) of the teacher; the student starts from its weights
    (init "teacher"), from scratch, or from a consistency model's file (a new run continuing a student, e.g. with a
    longer EMA or a decaying lr), its network predicting `prediction` (default v; None: the teacher's) inside the
    consistency scalings."""
    teacher = load_teacher(teacher_path)
    config = consistency_config(teacher.config, budget, teacher.denoiser.sigma_min)
    config = replace(config, prediction=prediction or config.prediction)
    if init not in ("teacher", "scratch"):
        config = init_student(init, config)
    net = student_net(config, teacher if init == "teacher" else None)
    objective = ConsistencyObjective(build_denoiser(net, config), recipe, _total(budget), teacher=teacher.denoiser,
                                     teacher_ref=teacher.ref)
    return train_student(objective, config, out, progress, resume)


def train_consistency(config: ExperimentConfig, out: str | Path, recipe: ConsistencyRecipe, budget: Budget, *,
                      progress: bool = True, resume: bool = False) -> Path:
    """Consistency training from data alone (Song et al. 2023, Alg. 3; iCT with the improved recipe)."""
    if config.precond.kind == "consistency":
        raise DifflabError("--config: give the diffusion config (vp or edm); the consistency scalings wrap it")
    if not hasattr(config.network, "in_channels"):
        raise DifflabError(f"--config: consistency training takes images (a U-Net or DiT config), not a "
                           f"{network_spec(config.network)['kind']} network")
    data = load_dataset(config.train.data, "train", config.train.data_root, seed=config.train.seed)
    network = replace(config.network, in_channels=data.shape[0], out_channels=None)
    config = replace(config, network=network, data_shape=data.shape)
    sigma_min = build_denoiser(build_network(config.network), config).sigma_min
    config = consistency_config(config, budget, sigma_min)
    objective = ConsistencyObjective(build_denoiser(student_net(config, None), config), recipe, _total(budget))
    return train_student(objective, config, out, progress, resume)


def consistency_config(base: ExperimentConfig, budget: Budget, sigma_min: float) -> ExperimentConfig:
    precond = ConsistencyConfig(sigma_min=sigma_min, inner=base.precond)
    return replace(base, precond=precond, train=replace(base.train, **budget.loop()))


def _total(budget: Budget) -> int:
    if budget.steps is None:
        raise DifflabError("consistency training's curriculum runs over --steps: give --steps")
    return budget.steps


def distill_progressive(teacher_path: str | Path, out: str | Path, rounds: int, teacher_steps: int, budget: Budget,
                        *, grid: str | None = None, prediction: str | None = None,
                        progress: bool = True, resume: bool = False) -> list[Path]:
    """`rounds` rounds of progressive distillation from the teacher's `teacher_steps`-step DDIM grid, halving it
    each round; round r writes OUT/round_r/student.safetensors (its teacher: round r - 1's student). `resume` keeps
    the rounds finished before the interrupt and continues the interrupted one exactly."""
    if rounds < 1:
        raise DifflabError(f"--rounds must be >= 1, got {rounds}")
    if teacher_steps % 2**rounds:
        raise DifflabError(f"--teacher-steps {teacher_steps} cannot be halved {rounds} times; use a multiple of "
                           f"{2**rounds}")
    teacher = load_teacher(teacher_path)
    kind = grid or teacher.denoiser.default_grid
    sigmas = make_grid(teacher.denoiser.schedule, teacher_steps, kind)
    paths = []
    for r in range(1, rounds + 1):
        student_sigmas = halve(sigmas)
        steps = len(student_sigmas) - 1
        if not named_grid(teacher.denoiser.schedule, kind, steps, student_sigmas):
            raise DifflabError(f"every other level of the {steps * 2}-step {kind} grid is not the {steps}-step {kind} "
                               f"grid: use --grid trailing with a power-of-two --teacher-steps")
        config = replace(teacher.config, prediction=prediction or teacher.config.prediction,
                         train=replace(teacher.config.train, **budget.loop()),
                         student_grid=StudentGrid(kind, steps, tuple(student_sigmas.tolist())))
        net = student_net(config, teacher)
        objective = ProgressiveObjective(build_denoiser(net, config), teacher.denoiser, sigmas, teacher.ref)
        path = Path(out) / f"round_{r}" / CHECKPOINT
        saved = load_checkpoint(path) if resume and path.is_file() else None
        if saved is not None and saved.optimizer_groups is None:  # a round finished before the interrupt
            check_same_run(saved, path, config, objective)
        else:  # the interrupted round continues; those after it start afresh
            train_student(objective, config, path.parent, progress, resume=resume and (r == 1 or saved is not None))
        paths.append(path)
        teacher, sigmas = load_teacher(path), student_sigmas
    return paths

