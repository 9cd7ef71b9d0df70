"""What a noise-aware classifier component says about itself: its network, the schedule it was trained for, its
classes, and its training recipe (the shared loop settings with a classifier's defaults)."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Literal

from difflab.errors import DifflabError
from difflab.nets.classifier import ClassifierConfig
from difflab.schedules import ScheduleConfig
from difflab.train.recipe import LoopConfig


@dataclass(frozen=True)
class ClassifierTrainConfig(LoopConfig):
    """AdamW with weight decay, warm-up then cosine decay, no clipping and no EMA (Dhariwal & Nichol 2021)."""

    steps: int | None = 1500
    lr: float = 1e-3
    weight_decay: float = 0.05
    warmup: int = 100
    lr_decay: Literal["constant", "cosine"] = "cosine"
    grad_clip: float | None = None
    ema_decay: float | None = None
    checkpoint_every: int = 500  # steps between the checkpoints that --resume continues from
    eval_n: int = 2000  # test images per noise level for the accuracy at the end

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.steps is None:
            raise DifflabError("a classifier trains for --steps (its learning rate decays to 0 there)")
        if self.eval_n <= 0:
            raise DifflabError(f"--eval-n must be > 0, got {self.eval_n}")


@dataclass(frozen=True)
class ClassifierSpec:
    """Everything a classifier component says about itself besides its weights."""

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
        return cls(ClassifierConfig.from_dict(spec["network"]), ScheduleConfig(**spec["schedule"]),
                   tuple(spec["class_names"]), tuple(spec["data_shape"]), ClassifierTrainConfig(**spec["train"]))
