"""Training a ControlNet on the one loop: the base denoiser frozen (referred to by path and sha256, never copied), the
encoder copy trained on (image, annotator map) pairs computed on the fly.

Each step draws the base's conditions (its class and/or caption) with the prompt dropped to the null one with
probability p_uncond (Zhang et al. 2023, Sec. 3.3: half the prompts emptied, so the ControlNet learns to read the
content from the map alone and sampling may guide without the prompt), a noise level and eps, and minimises the
base's own loss through the controlled network: the gradients reach only the ControlNet. The control itself is
never dropped while training: a row without control gets exactly the base's output and no gradient, so CFG can
leave it out of the unconditional half ("ControlNet is more important") without ever having trained on it.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch

from difflab.annotators import CONTROL_TYPES, annotate
from difflab.data import load_dataset
from difflab.denoiser import Denoiser
from difflab.errors import DifflabError
from difflab.nets.controlnet import (
    AppliedControl,
    ControlledNet,
    ControlNet,
    ControlNetConfig,
    with_control,
)
from difflab.objectives import draw_edm_noise, draw_noise, training_loss
from difflab.train.checkpoint import (
    Checkpoint,
    ComponentRef,
    load_checkpoint,
    load_denoiser,
    save_checkpoint,
    unfinished_run,
)
from difflab.train.conditions import TrainingConditions
from difflab.train.loop import TrainingLoop
from difflab.train.objective import Objective
from difflab.train.recipe import LoopConfig

CHECKPOINT = "controlnet.safetensors"


@dataclass(frozen=True)
class ControlNetTrainConfig(LoopConfig):
    steps: int | None = 2000
    batch: int = 32
    lr: float = 3e-4
    warmup: int = 100
    checkpoint_every: int = 250
    p_uncond: float = 0.5  # probability of the null prompt (Zhang et al. 2023: 50 %)

    def __post_init__(self) -> None:
        super().__post_init__()
        if not 0 <= self.p_uncond <= 1:
            raise DifflabError(f"--p-uncond must lie in [0, 1], got {self.p_uncond}")


@dataclass(frozen=True)
class ControlNetSpec:
    """Everything a ControlNet component says about itself besides its weights; the base is in its refs."""

    network: ControlNetConfig
    data_shape: tuple[int, ...]  # of the condition images (the base's data shape for a pixel model)
    train: ControlNetTrainConfig = field(default_factory=ControlNetTrainConfig)

    def to_dict(self) -> dict:
        return {"network": self.network.to_dict(), "data_shape": list(self.data_shape), "train": asdict(self.train)}

    @classmethod
    def from_dict(cls, spec: dict) -> ControlNetSpec:
        return cls(ControlNetConfig.from_dict(spec["network"]), tuple(spec["data_shape"]),
                   ControlNetTrainConfig(**spec["train"]))


class ControlNetObjective(Objective):
    """The base's diffusion loss through ControlledNet(frozen base, trainable ControlNet) with the map as control."""

    def __init__(self, controlnet: ControlNet, base: Denoiser, conditions: TrainingConditions, base_ref: ComponentRef):
        self.module, self.base, self.conditions = controlnet, base, conditions
        self.frozen = {"base": base_ref}
        self.loss_kind = "edm" if base.precond.kind == "edm" else "simple"

    def draw(self, index, x0: torch.Tensor, labels: torch.Tensor | None, generator: torch.Generator) -> dict:
        cond = self.conditions(index, labels, generator)
        if self.loss_kind == "edm":
            level, eps = draw_edm_noise(self.base.precond.config, tuple(x0.shape), generator, dtype=x0.dtype)
        else:
            level, eps = draw_noise(self.base.schedule, tuple(x0.shape), generator, dtype=x0.dtype)
        return {"cond": cond, "level": level, "eps": eps, "hint": annotate(self.module.config.control, x0)}

    def bind(self, module) -> None:
        device = next(self.module.parameters()).device
        self.base.to(device)
        count = self.module.residual_count
        net = ControlledNet(self.base.net, [AppliedControl(module, slice(None), (1.0,) * count)])
        self.train_denoiser = Denoiser(net, self.base.precond)

    def loss(self, x0: torch.Tensor, draw: dict) -> tuple[torch.Tensor, None]:
        cond = with_control(draw["cond"], draw["hint"])
        return training_loss(self.loss_kind, self.train_denoiser, x0, cond,
                             noise=(draw["level"], draw["eps"])).float(), None


def frozen_base(path: str | Path) -> Denoiser:
    """The base denoiser (EMA weights), in eval mode and without parameter gradients."""
    denoiser, _ = load_denoiser(path)
    denoiser.net.requires_grad_(False)
    return denoiser.eval()


@dataclass(frozen=True)
class ControlNetResult:
    checkpoint: Path
    step: int
    seconds: float


def train_controlnet(base: str | Path, control: str, cfg: ControlNetTrainConfig, out: str | Path, *,
                     progress: bool = True, resume: bool = False) -> ControlNetResult:
    """Train a ControlNet for the base checkpoint on `control` maps of cfg.data; writes OUT/controlnet.safetensors.
    `resume` continues an interrupted run exactly, with its own settings."""
    path = Path(out) / CHECKPOINT
    saved = unfinished_run(path, "controlnet") if resume else None
    if saved is not None:
        cfg, control = saved.config.train, saved.config.network.control
        base = saved.refs["base"].check("base")  # the base it was trained against
    if control not in CONTROL_TYPES:
        raise DifflabError(f"--control must be one of {', '.join(CONTROL_TYPES)}, got {control!r}")
    base_denoiser = frozen_base(base)
    base_config = load_checkpoint(base).config
    data = load_dataset(cfg.data, "train", cfg.data_root, seed=cfg.seed)
    if data.kind != "image" or tuple(data.shape) != tuple(base_config.data_shape):
        raise DifflabError(f"--data: the base makes {list(base_config.data_shape)} images, the data set has "
                           f"{list(data.shape)}")
    torch.manual_seed(cfg.seed)
    net = ControlNet.from_unet(base_denoiser.net, control, hint_channels=1)
    spec = ControlNetSpec(net.config, tuple(base_config.data_shape), cfg)
    conditions = TrainingConditions(base_config.train.cond, cfg.p_uncond, data)
    objective = ControlNetObjective(net, base_denoiser, conditions, ComponentRef.to("denoiser", base))
    loop = TrainingLoop(objective, data, cfg, Path(out), kind="controlnet", config=spec, checkpoint_name=CHECKPOINT,
                        progress=progress)
    if saved is not None:
        loop.restore(saved)
    start = time.perf_counter()
    loop.run()
    seconds = time.perf_counter() - start
    # the finished component: its (EMA) weights, spec and the base's ref, without the training state
    save_checkpoint(path, spec, loop.step, kind="controlnet", model=net if loop.ema is None else loop.ema.model,
                    refs=objective.frozen)
    return ControlNetResult(path, loop.step, seconds)


def load_controlnet(path: str | Path) -> tuple[ControlNet, Checkpoint]:
    """A ControlNet component (EMA weights where present), in eval mode without parameter gradients."""
    checkpoint = load_checkpoint(path, kind="controlnet")
    net = ControlNet(checkpoint.config.network)
    weights = checkpoint.section("ema") or checkpoint.section("model")
    try:
        net.load_state_dict(weights)
    except RuntimeError as err:
        raise DifflabError(f"control model {path}: weights do not fit its config "
                           f"({str(err).splitlines()[0]})") from None
    return net.eval().requires_grad_(False), checkpoint
