"""The recipe every training run shares (budget, optimizer, EMA, speed options), validated with one-line errors."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from difflab.distributed import DEVICES
from difflab.errors import DifflabError
from difflab.precision import TRAINING_PRECISIONS

LR_DECAYS = ("constant", "cosine")


@dataclass(frozen=True)
class LoopConfig:
    data: str = "fashion-mnist"
    data_root: str | None = None
    steps: int | None = 20_000  # stop after this many optimizer steps (None: only the wall-clock budget)
    minutes: float | None = None  # stop after this much wall-clock training time
    batch: int = 64
    lr: float = 2e-4
    weight_decay: float = 0.0
    warmup: int = 500  # linear learning-rate warm-up steps
    lr_decay: Literal["constant", "cosine"] = "constant"  # after the warm-up; cosine reaches 0 at `steps`
    grad_clip: float | None = 1.0  # max global gradient norm (None: no clipping)
    ema_decay: float | None = 0.999  # with warm-up: decay_t = min(ema_decay, (1 + t) / (10 + t)); None: no EMA
    seed: int = 0
    log_every: int = 50
    checkpoint_every: int = 1000
    accumulate: int = 1  # micro-batches per optimizer step (each process's share of --batch is split this many ways)
    # bf16/fp16: forward and loss under torch.autocast; auto: bf16 where the CPU has AMX (difflab.precision)
    precision: Literal["fp32", "bf16", "fp16", "auto"] = "fp32"
    compile: bool = False  # torch.compile the network (eager, with a warning, where that fails); per run
    device: Literal["cpu", "cuda", "auto"] = "auto"  # auto: cuda where available; per run (--resume may change it)

    def __post_init__(self) -> None:
        positive = {"batch": self.batch, "accumulate": self.accumulate, "log_every": self.log_every,
                    "checkpoint_every": self.checkpoint_every}
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
        if self.lr_decay not in LR_DECAYS:
            raise DifflabError(f"lr_decay must be constant or cosine, got {self.lr_decay!r}")
        if self.lr_decay == "cosine" and self.steps is None:
            raise DifflabError("lr_decay cosine decays to 0 at --steps: give --steps")
        if self.grad_clip is not None and not self.grad_clip > 0:
            raise DifflabError(f"grad_clip must be > 0 (or null: no clipping), got {self.grad_clip}")
        if self.ema_decay is not None and not 0 <= self.ema_decay < 1:
            raise DifflabError(f"ema_decay must lie in [0, 1) (or null: no EMA), got {self.ema_decay}")
        if self.precision not in TRAINING_PRECISIONS:
            raise DifflabError(f"--precision must be fp32, bf16, fp16 or auto, got {self.precision!r}")
        if self.device not in DEVICES:
            raise DifflabError(f"--device must be cpu, cuda or auto, got {self.device!r}")
        if self.batch % self.accumulate:
            raise DifflabError(f"--batch {self.batch} must be divisible by --accumulate {self.accumulate}")
