"""Training a noise-aware classifier p_phi(y | x_t, t) for classifier guidance, on the one loop.

Each step draws t ~ U{0..T-1} and eps, forms x_t = q_sample(x0, t, eps) on the schedule of the diffusion model it
will guide, and minimises the cross-entropy of the label (Dhariwal & Nichol 2021, Sec. 4). The result is a
"classifier" component: its spec (network, schedule, class names) in the metadata, with the test accuracy.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, replace
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from difflab.data import load_dataset
from difflab.errors import DifflabError
from difflab.guidance import NoisyClassifier
from difflab.nets.classifier import ClassifierConfig, NoiseAwareClassifier
from difflab.objectives import draw_noise
from difflab.schedules import DiscreteSchedule, ScheduleConfig
from difflab.train.checkpoint import load_checkpoint, save_checkpoint, unfinished_run
from difflab.train.classifier_config import ClassifierSpec, ClassifierTrainConfig
from difflab.train.loop import TrainingLoop
from difflab.train.objective import Objective

CHECKPOINT = "classifier.safetensors"
EVAL_TIMESTEPS = (0, 100, 250, 500, 750, 999)  # noise levels of the test accuracy (clipped to the schedule)


class ClassifierObjective(Objective):
    """Cross-entropy of the label at x_t ~ q(x_t | x0) for t ~ U{0..T-1}."""

    def __init__(self, net: NoiseAwareClassifier, schedule: DiscreteSchedule):
        self.module, self.schedule = net, schedule

    def draw(self, index, x0: torch.Tensor, labels: torch.Tensor, generator: torch.Generator) -> dict:
        timestep, eps = draw_noise(self.schedule, tuple(x0.shape), generator, dtype=x0.dtype)
        return {"labels": labels, "timestep": timestep, "eps": eps}

    def loss(self, x0: torch.Tensor, draw: dict) -> tuple[torch.Tensor, None]:
        x_t = self.schedule.q_sample(x0, draw["timestep"], draw["eps"])  # Ho et al. 2020, Eq. 4
        logits = self.train_module(x_t, draw["timestep"].float())
        return F.cross_entropy(logits, draw["labels"], reduction="none"), None  # -log p_phi(y | x_t, t)


def load_classifier(path: str | Path) -> tuple[NoisyClassifier, ClassifierSpec]:
    """The classifier as logits(x, sigma) in VE coordinates (eval mode, no parameter gradients) and its spec."""
    checkpoint = load_checkpoint(path, kind="classifier")
    net = NoiseAwareClassifier(checkpoint.config.network)
    try:
        net.load_state_dict(checkpoint.section("model"))
    except RuntimeError as err:
        raise DifflabError(f"--classifier: {path}: weights do not fit its config "
                           f"({str(err).splitlines()[0]})") from None
    net.eval().requires_grad_(False)
    return NoisyClassifier(net, DiscreteSchedule(checkpoint.config.schedule)), checkpoint.config


@torch.no_grad()
def accuracy_by_timestep(net: nn.Module, schedule: DiscreteSchedule, x0: torch.Tensor, labels: torch.Tensor,
                         timesteps: tuple[int, ...], seed: int = 0, batch: int = 500) -> dict[int, float]:
    """Share of x_t = q_sample(x0, t) classified as their label, at each timestep t (fixed noise seed)."""
    net.eval()
    generator = torch.Generator().manual_seed(seed)
    accuracy = {}
    for t in timesteps:
        correct = 0
        for start in range(0, len(x0), batch):
            x = x0[start: start + batch]
            timestep = torch.full((len(x),), t)
            x_t = schedule.q_sample(x, timestep, torch.randn(x.shape, generator=generator))
            correct += int((net(x_t, timestep.float()).argmax(1) == labels[start: start + batch]).sum())
        accuracy[t] = correct / len(x0)
    return accuracy


@dataclass(frozen=True)
class ClassifierResult:
    checkpoint: Path
    step: int
    seconds: float
    accuracy: dict[int, float]  # test accuracy by timestep


def train_classifier(cfg: ClassifierTrainConfig, schedule_config: ScheduleConfig, out: str | Path, *,
                     network: ClassifierConfig = ClassifierConfig(), progress: bool = True,
                     resume: bool = False) -> ClassifierResult:
    """Train on the labelled images of cfg.data by cross-entropy on x_t at uniform t, for the diffusion schedule
    `schedule_config`; writes OUT/classifier.safetensors. Every cfg.checkpoint_every steps, and on an interrupt, the
    file also holds the optimizer and noise stream, and `resume` continues from it exactly, with its own config."""
    path = Path(out) / CHECKPOINT
    saved = unfinished_run(path, "classifier") if resume else None
    if saved is not None:
        cfg, schedule_config, network = saved.config.train, saved.config.schedule, saved.config.network
    data = load_dataset(cfg.data, "train", cfg.data_root, seed=cfg.seed)
    if data.kind != "image" or data.labels is None:
        raise DifflabError(f"--data: a classifier trains on labelled images, and {data.name!r} has "
                           f"{'no labels' if data.kind == 'image' else 'points'}")
    network = replace(network, trunk=replace(network.trunk, in_channels=data.shape[0]), num_classes=data.num_classes)
    spec = ClassifierSpec(network, schedule_config, data.class_names, data.shape, cfg)
    schedule = DiscreteSchedule(schedule_config)
    torch.manual_seed(cfg.seed)
    net = NoiseAwareClassifier(spec.network)
    loop = TrainingLoop(ClassifierObjective(net, schedule), data, cfg, Path(out), kind="classifier", config=spec,
                        checkpoint_name=CHECKPOINT, progress=progress)
    if saved is not None:
        loop.restore(saved)
    start = time.perf_counter()
    loop.run()
    seconds = time.perf_counter() - start
    test = load_dataset(cfg.data, "test", cfg.data_root, seed=cfg.seed)
    x0, labels = test.batch(torch.arange(min(cfg.eval_n, len(test))))
    timesteps = tuple(sorted({min(t, schedule.timesteps - 1) for t in EVAL_TIMESTEPS}))
    accuracy = accuracy_by_timestep(net, schedule, x0, labels, timesteps, seed=cfg.seed)
    # the finished component: weights, spec and accuracy, without the training state
    save_checkpoint(path, spec, loop.step, kind="classifier", model=net,
                    extra_metadata={"accuracy": json.dumps(accuracy)})
    return ClassifierResult(path, loop.step, seconds, accuracy)
