"""Training a noise-aware classifier p_phi(y | x_t, t) for classifier guidance, and its checkpoint.

Each step draws t ~ U{0..T-1} and eps, forms x_t = q_sample(x0, t, eps) on the schedule of the diffusion model it
will guide, and minimises the cross-entropy of the label (Dhariwal & Nichol 2021, Sec. 4). The checkpoint is one
safetensors file with the network config, the schedule, the class names and the test accuracy in its metadata.
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import torch
import torch.nn.functional as F
from safetensors.torch import save as save_bytes
from tqdm import tqdm

from difflab.data import load_dataset
from difflab.errors import DifflabError
from difflab.guidance import NoisyClassifier
from difflab.images import atomic_write
from difflab.nets.classifier import ClassifierConfig, NoiseAwareClassifier
from difflab.objectives import draw_noise
from difflab.schedules import DiscreteSchedule, ScheduleConfig
from difflab.train.checkpoint import optimizer_tensors, read_safetensors, unflatten_optimizer_state
from difflab.train.optim import learning_rate, set_learning_rate
from difflab.train.trainer import batch_indices

FORMAT = "difflab-classifier-1"
CHECKPOINT = "classifier.safetensors"
TRAINING_STATE = ("optim.", "rng.")  # key prefixes of the optimizer state and noise stream in a mid-run save
EVAL_TIMESTEPS = (0, 100, 250, 500, 750, 999)  # noise levels of the test accuracy (clipped to the schedule)


@dataclass(frozen=True)
class ClassifierTrainConfig:
    data: str = "fashion-mnist"
    data_root: str | None = None
    steps: int = 1500
    batch: int = 64
    lr: float = 1e-3
    weight_decay: float = 0.05
    warmup: int = 100
    seed: int = 0
    eval_n: int = 2000  # test images per noise level for the accuracy at the end
    checkpoint_every: int = 500  # steps between the checkpoints that --resume continues from

    def __post_init__(self) -> None:
        for name in ("steps", "batch", "eval_n", "checkpoint_every"):
            if getattr(self, name) <= 0:
                raise DifflabError(f"--{name.replace('_', '-')} must be > 0, got {getattr(self, name)}")
        if not self.lr > 0:
            raise DifflabError(f"--lr must be > 0, got {self.lr}")


@dataclass(frozen=True)
class ClassifierSpec:
    """Everything a classifier checkpoint says about itself besides its weights."""

    network: ClassifierConfig
    schedule: ScheduleConfig  # the diffusion schedule it was trained on, which the guided model must share
    class_names: tuple[str, ...]
    data_shape: tuple[int, ...]
    train: ClassifierTrainConfig = field(default_factory=ClassifierTrainConfig)

    def to_dict(self) -> dict:
        return {"network": asdict(self.network), "schedule": asdict(self.schedule),
                "class_names": list(self.class_names), "data_shape": list(self.data_shape),
                "train": asdict(self.train)}

    @classmethod
    def from_dict(cls, spec: dict) -> ClassifierSpec:
        return cls(ClassifierConfig(**spec["network"]), ScheduleConfig(**spec["schedule"]),
                   tuple(spec["class_names"]), tuple(spec["data_shape"]), ClassifierTrainConfig(**spec["train"]))


def save_classifier(path: str | Path, net: NoiseAwareClassifier, spec: ClassifierSpec, step: int,
                    accuracy: dict[int, float] | None = None, optimizer: torch.optim.Optimizer | None = None,
                    generator: torch.Generator | None = None) -> None:
    """Weights and spec (and the test accuracy by timestep), written atomically; mid-run, also the optimizer and
    the noise stream, which --resume continues from."""
    tensors = {k: v.detach().contiguous() for k, v in net.state_dict().items()}
    metadata = {"format": FORMAT, "step": str(step), "config": json.dumps(spec.to_dict()),
                "accuracy": json.dumps(accuracy or {})}
    if optimizer is not None:
        optim, metadata["optimizer_groups"] = optimizer_tensors(optimizer)
        tensors.update(optim)
        tensors["rng.noise"] = generator.get_state()
    payload = save_bytes(tensors, metadata=metadata)
    atomic_write(path, lambda f: f.write(payload))


def network_weights(tensors: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The network's tensors of a classifier file, without the training state a mid-run save adds."""
    return {k: v for k, v in tensors.items() if not k.startswith(TRAINING_STATE)}


def load_classifier(path: str | Path) -> tuple[NoisyClassifier, ClassifierSpec]:
    """The classifier as logits(x, sigma) in VE coordinates (eval mode, no parameter gradients) and its spec."""
    tensors, metadata = read_safetensors(path, "--classifier:")
    if metadata.get("format") != FORMAT:
        raise DifflabError(f"--classifier: {path} is not a difflab classifier (format {metadata.get('format')!r}); "
                           f"train one with `difflab train-classifier`")
    spec = ClassifierSpec.from_dict(json.loads(metadata["config"]))
    net = NoiseAwareClassifier(spec.network)
    try:
        net.load_state_dict(network_weights(tensors))
    except RuntimeError as err:
        raise DifflabError(f"--classifier: {path}: weights do not fit its config "
                           f"({str(err).splitlines()[0]})") from None
    net.eval().requires_grad_(False)
    return NoisyClassifier(net, DiscreteSchedule(spec.schedule)), spec


@torch.no_grad()
def accuracy_by_timestep(net: NoiseAwareClassifier, schedule: DiscreteSchedule, x0: torch.Tensor, labels: torch.Tensor,
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


@dataclass(frozen=True)
class UnfinishedRun:
    spec: ClassifierSpec
    step: int
    weights: dict[str, torch.Tensor]
    optimizer: dict
    rng: torch.Tensor


def read_unfinished(path: Path) -> UnfinishedRun:
    """The state of an interrupted `difflab train-classifier` run saved at path, for --resume."""
    tensors, metadata = read_safetensors(path, "--resume: classifier checkpoint")
    if metadata.get("format") != FORMAT:
        raise DifflabError(f"--resume: {path} is not a difflab classifier (format {metadata.get('format')!r})")
    if "optimizer_groups" not in metadata:
        raise DifflabError(f"--resume: {path} holds a finished classifier (step {metadata['step']}); nothing to resume")
    optim = {k[len("optim."):]: v for k, v in tensors.items() if k.startswith("optim.")}
    return UnfinishedRun(ClassifierSpec.from_dict(json.loads(metadata["config"])), int(metadata["step"]),
                         network_weights(tensors),
                         unflatten_optimizer_state(optim, json.loads(metadata["optimizer_groups"])),
                         tensors["rng.noise"])


def train_classifier(cfg: ClassifierTrainConfig, schedule_config: ScheduleConfig, out: str | Path, *,
                     network: ClassifierConfig = ClassifierConfig(), progress: bool = True,
                     resume: bool = False) -> ClassifierResult:
    """Train on the labelled images of cfg.data by cross-entropy on x_t at uniform t, for the diffusion schedule
    `schedule_config`; writes OUT/classifier.safetensors. Every cfg.checkpoint_every steps, and on an interrupt, the
    file also holds the optimizer and noise stream, and `resume` continues from it exactly, with its own config."""
    path = Path(out) / CHECKPOINT
    saved = read_unfinished(path) if resume else None
    if saved is not None:
        cfg, schedule_config, network = saved.spec.train, saved.spec.schedule, saved.spec.network
    data = load_dataset(cfg.data, "train", cfg.data_root, seed=cfg.seed)
    if data.kind != "image" or data.labels is None:
        raise DifflabError(f"--data: a classifier trains on labelled images, and {data.name!r} has "
                           f"{'no labels' if data.kind == 'image' else 'points'}")
    network = replace(network, in_channels=data.shape[0], num_classes=data.num_classes)
    spec = ClassifierSpec(network, schedule_config, data.class_names, data.shape, cfg)
    schedule = DiscreteSchedule(schedule_config)
    torch.manual_seed(cfg.seed)
    net = NoiseAwareClassifier(spec.network)
    optimizer = torch.optim.AdamW(net.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    generator = torch.Generator().manual_seed(cfg.seed)
    done = 0  # completed steps
    if saved is not None:
        net.load_state_dict(saved.weights)
        optimizer.load_state_dict(saved.optimizer)
        generator.set_state(saved.rng)
        done = saved.step
    start = time.perf_counter()
    bar = tqdm(range(done, cfg.steps), initial=done, total=cfg.steps, disable=not progress, unit="step",
               dynamic_ncols=True)
    rng = generator.get_state()  # the noise stream after the last completed step, which an interrupt saves
    try:
        for step in bar:
            x0, labels = data.batch(batch_indices(len(data), cfg.batch, step, cfg.seed))
            timestep, eps = draw_noise(schedule, tuple(x0.shape), generator, dtype=x0.dtype)
            x_t = schedule.q_sample(x0, timestep, eps)  # Ho et al. 2020, Eq. 4
            loss = F.cross_entropy(net(x_t, timestep.float()), labels)  # -log p_phi(y | x_t, t)
            # linear warm-up, then cosine decay to 0 (Loshchilov & Hutter 2017, Eq. 5 without restarts)
            cosine = 0.5 * (1 + math.cos(math.pi * step / cfg.steps))
            set_learning_rate(optimizer, learning_rate(step, cfg.lr, cfg.warmup) * cosine)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            done = step + 1
            rng = generator.get_state()
            bar.set_postfix(loss=f"{loss.item():.3f}")
            if done % cfg.checkpoint_every == 0 and done < cfg.steps:
                save_classifier(path, net, spec, done, optimizer=optimizer, generator=generator)
    except KeyboardInterrupt:
        bar.close()
        generator.set_state(rng)
        save_classifier(path, net, spec, done, optimizer=optimizer, generator=generator)
        raise
    bar.close()
    seconds = time.perf_counter() - start
    test = load_dataset(cfg.data, "test", cfg.data_root, seed=cfg.seed)
    x0, labels = test.batch(torch.arange(min(cfg.eval_n, len(test))))
    timesteps = tuple(sorted({min(t, schedule.timesteps - 1) for t in EVAL_TIMESTEPS}))
    accuracy = accuracy_by_timestep(net, schedule, x0, labels, timesteps, seed=cfg.seed)
    save_classifier(path, net, spec, done, accuracy)
    return ClassifierResult(path, done, seconds, accuracy)
