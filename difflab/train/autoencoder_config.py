"""What an autoencoder component says about itself: its network, the images it codes, its training recipe (the shared
loop settings with an autoencoder's defaults), and the latent scale factor measured on the training set."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Literal

from difflab.errors import DifflabError
from difflab.nets.autoencoder import AutoencoderConfig
from difflab.train.recipe import LoopConfig

RECONSTRUCTIONS = ("l1", "l2")


@dataclass(frozen=True)
class AutoencoderTrainConfig(LoopConfig):
    """Reconstruction + beta KL (+ a perceptual term); AdamW, warm-up then cosine decay, no EMA."""

    steps: int | None = 3000
    lr: float = 1e-3
    warmup: int = 100
    lr_decay: Literal["constant", "cosine"] = "cosine"
    ema_decay: float | None = None
    checkpoint_every: int = 500
    reconstruction: Literal["l1", "l2"] = "l1"
    beta: float = 1e-4  # weight of KL(q(z | x) || N(0, I)) against the summed reconstruction error
    perceptual: float = 0.0  # weight of the distance in the bundled feature net's features (0: none)
    scale_n: int | None = None  # training images the latent scale factor is measured on (None: all)

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.steps is None:
            raise DifflabError("an autoencoder trains for --steps (its learning rate decays to 0 there)")
        if self.reconstruction not in RECONSTRUCTIONS:
            raise DifflabError(f"--reconstruction must be l1 or l2, got {self.reconstruction!r}")
        if self.beta < 0 or self.perceptual < 0:
            raise DifflabError(f"--beta and --perceptual must be >= 0, got {self.beta} and {self.perceptual}")
        if self.scale_n is not None and self.scale_n < 2:
            raise DifflabError(f"--scale-n must be >= 2, got {self.scale_n}")


@dataclass(frozen=True)
class AutoencoderSpec:
    """Everything an autoencoder component says about itself besides its weights."""

    network: AutoencoderConfig
    data_shape: tuple[int, ...]  # one image [C, H, W]
    train: AutoencoderTrainConfig = field(default_factory=AutoencoderTrainConfig)
    scale_factor: float | None = None  # 1 / std of the latent means on the training set; None until measured

    @property
    def latent_shape(self) -> tuple[int, int, int]:
        return self.network.latent_shape(self.data_shape)

    def to_dict(self) -> dict:
        return {"network": asdict(self.network), "data_shape": list(self.data_shape), "train": asdict(self.train),
                "scale_factor": self.scale_factor}

    @classmethod
    def from_dict(cls, spec: dict) -> AutoencoderSpec:
        return cls(AutoencoderConfig(**spec["network"]), tuple(spec["data_shape"]),
                   AutoencoderTrainConfig(**spec["train"]), spec.get("scale_factor"))
