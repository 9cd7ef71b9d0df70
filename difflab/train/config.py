"""The typed experiment config: network, schedule, prediction and training recipe, stored as JSON."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any, Literal

from difflab.distributed import DEVICES
from difflab.errors import DifflabError
from difflab.nets import network_config, network_spec
from difflab.nets.mlp import MLPConfig
from difflab.nets.unet import UNetConfig
from difflab.objectives import LOSSES, LossKind
from difflab.prediction import Prediction, check_prediction
from difflab.schedules import ScheduleConfig
from difflab.train.conditions import COND_KINDS, CondKind


@dataclass(frozen=True)
class TrainConfig:
    data: str = "fashion-mnist"
    data_root: str | None = None
    steps: int | None = 20_000  # stop after this many optimizer steps (None: only the wall-clock budget)
    minutes: float | None = None  # stop after this much wall-clock training time
    batch: int = 64
    lr: float = 2e-4
    weight_decay: float = 0.0
    warmup: int = 500  # linear learning-rate warm-up steps
    grad_clip: float = 1.0
    ema_decay: float = 0.999  # with warm-up: decay_t = min(ema_decay, (1 + t) / (10 + t))
    min_snr_gamma: float | None = None
    cond: CondKind = "none"
    p_uncond: float = 0.1  # condition dropout: the share of examples trained on the null condition
    label_lr_scale: float = 1.0  # the class-label table steps at label_lr_scale * lr (see train/optim.py)
    seed: int = 0
    init_from: str | None = None  # start from this checkpoint's EMA weights (fine-tuning); new layers keep their init
    log_every: int = 50
    sample_every: int = 2000
    checkpoint_every: int = 1000
    sample_steps: int = 50
    accumulate: int = 1  # micro-batches per optimizer step (each process's share of --batch is split this many ways)
    precision: Literal["fp32", "bf16", "fp16"] = "fp32"  # bf16/fp16: forward and loss under torch.autocast
    compile: bool = False  # torch.compile the network (eager, with a warning, where that fails); per run
    device: Literal["cpu", "cuda", "auto"] = "auto"  # auto: cuda where available; per run (--resume may change it)
    loss: LossKind = "simple"  # simple: L_simple; hybrid: L_simple + vlb_weight L_vlb; vlb: L_vlb, t importance-sampled
    vlb_weight: float = 0.001  # lambda of L_hybrid (Nichol & Dhariwal 2021, Sec. 3.1)

    def __post_init__(self) -> None:
        positive = {"batch": self.batch, "accumulate": self.accumulate, "log_every": self.log_every, "sample_every": self.sample_every,
                    "checkpoint_every": self.checkpoint_every, "sample_steps": self.sample_steps}
        for name, value in positive.items():
            if value <= 0:
                raise DifflabError(f"--{name.replace('_', '-')} must be > 0, got {value}")
        if self.steps is None and self.minutes is None:
            raise DifflabError("give a training budget: --steps N or --minutes M")
        if self.steps is not None and self.steps <= 0:
            raise DifflabError(f"--steps must be > 0, got {self.steps}")
        if self.minutes is not None and self.minutes <= 0:
            raise DifflabError(f"--minutes must be > 0, got {self.minutes}")
        if not self.lr > 0:
            raise DifflabError(f"--lr must be > 0, got {self.lr}")
        if not 0 <= self.ema_decay < 1:
            raise DifflabError(f"ema_decay must lie in [0, 1), got {self.ema_decay}")
        if self.precision not in ("fp32", "bf16", "fp16"):
            raise DifflabError(f"--precision must be fp32, bf16 or fp16, got {self.precision!r}")
        if self.device not in DEVICES:
            raise DifflabError(f"--device must be cpu, cuda or auto, got {self.device!r}")
        if self.batch % self.accumulate:
            raise DifflabError(f"--batch {self.batch} must be divisible by --accumulate {self.accumulate}")
        if self.cond not in COND_KINDS:
            raise DifflabError(f"--cond must be one of {', '.join(COND_KINDS)}, got {self.cond!r}")
        if not self.label_lr_scale > 0:
            raise DifflabError(f"--label-lr-scale must be > 0, got {self.label_lr_scale}")
        if not 0 <= self.p_uncond < 1:
            raise DifflabError(f"p_uncond must lie in [0, 1), got {self.p_uncond}")
        if self.loss not in LOSSES:
            raise DifflabError(f"--loss must be one of {', '.join(LOSSES)}, got {self.loss!r}")
        if not self.vlb_weight > 0:
            raise DifflabError(f"vlb_weight must be > 0, got {self.vlb_weight}")


@dataclass(frozen=True)
class ExperimentConfig:
    network: UNetConfig | MLPConfig = field(default_factory=UNetConfig)
    schedule: ScheduleConfig = field(default_factory=ScheduleConfig)
    prediction: Prediction = "eps"
    train: TrainConfig = field(default_factory=TrainConfig)
    data_shape: tuple[int, ...] = (1, 28, 28)  # one example, filled in from the data set
    class_names: tuple[str, ...] | None = None

    def __post_init__(self) -> None:
        learned = self.network.learned_variance
        if self.train.loss == "hybrid" and not learned:
            raise DifflabError("train.loss 'hybrid' trains a learned variance: set network.learned_variance to true")
        if self.train.loss == "simple" and learned:
            raise DifflabError("network.learned_variance needs train.loss 'hybrid' or 'vlb' "
                               "(L_simple does not train it)")

    def to_dict(self) -> dict[str, Any]:
        return {
            "network": network_spec(self.network),
            "schedule": asdict(self.schedule),
            "prediction": self.prediction,
            "train": asdict(self.train),
            "data_shape": list(self.data_shape),
            "class_names": None if self.class_names is None else list(self.class_names),
        }

    @classmethod
    def from_dict(cls, spec: dict[str, Any]) -> ExperimentConfig:
        unknown = set(spec) - {f.name for f in fields(cls)}
        if unknown:
            raise DifflabError(f"config: unknown section(s) {', '.join(sorted(unknown))}")
        return cls(
            network=network_config(spec.get("network", {"kind": "unet"})),
            schedule=_typed(ScheduleConfig, spec.get("schedule", {}), "schedule"),
            prediction=check_prediction(spec.get("prediction", "eps")),
            train=_typed(TrainConfig, spec.get("train", {}), "train"),
            data_shape=tuple(spec.get("data_shape", (1, 28, 28))),
            class_names=None if spec.get("class_names") is None else tuple(spec["class_names"]),
        )


def _typed(cls, spec: dict[str, Any], section: str):
    unknown = set(spec) - {f.name for f in fields(cls)}
    if unknown:
        raise DifflabError(f"config.{section}: unknown field(s) {', '.join(sorted(unknown))}")
    return cls(**spec)


def load_config(path: str | Path) -> ExperimentConfig:
    path = Path(path)
    try:
        spec = json.loads(path.read_text())
    except FileNotFoundError:
        raise DifflabError(f"--config: file {path} not found") from None
    except json.JSONDecodeError as err:
        raise DifflabError(f"--config: {path} is not valid JSON ({err})") from None
    if not isinstance(spec, dict):
        raise DifflabError(f"--config: {path} must hold a JSON object")
    return ExperimentConfig.from_dict(spec)
