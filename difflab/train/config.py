"""The typed experiment config: network, schedule, prediction and training recipe, stored as JSON."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

from difflab.distill.student import ConsistencyLevels, StudentGrid
from difflab.denoiser import EDMConfig, PrecondConfig, VPConfig, precond_config
from difflab.errors import DifflabError
from difflab.nets import network_config, network_spec
from difflab.nets.mlp import MLPConfig
from difflab.nets.unet import UNetConfig
from difflab.objectives import LOSSES, LossKind
from difflab.prediction import Prediction, check_prediction
from difflab.schedules import ScheduleConfig
from difflab.train.conditions import COND_KINDS, CondKind
from difflab.train.recipe import LoopConfig


@dataclass(frozen=True)
class TrainConfig(LoopConfig):
    """A diffusion model's recipe: the shared loop settings and what the diffusion objective adds."""

    min_snr_gamma: float | None = None
    cond: CondKind = "none"
    p_uncond: float = 0.1  # condition dropout: the share of examples trained on the null condition
    label_lr_scale: float = 1.0  # the class-label table steps at label_lr_scale * lr (see train/optim.py)
    init_from: str | None = None  # start from this checkpoint's EMA weights (fine-tuning); new layers keep their init
    sample_every: int = 2000
    sample_steps: int = 50
    loss: LossKind = "simple"  # simple: L_simple; hybrid: + vlb_weight L_vlb; vlb: L_vlb, t importance-sampled; edm
    vlb_weight: float = 0.001  # lambda of L_hybrid (Nichol & Dhariwal 2021, Sec. 3.1)
    resolution: int | None = None  # train on the images average-pooled to resolution x resolution (a cascade's base)
    low_res: int | None = None  # super-resolution: condition on the image average-pooled to low_res x low_res
    low_res_augmentation: float = 0.0  # its noise-augmentation level s ~ U[0, this] (Ho et al. 2021); 0: none
    max_timestep: int | None = None  # a refiner: t ~ U{0..max_timestep-1}, the low-noise end (SDXL's: 200 of 1000)
    autoencoder: str | None = None  # latent diffusion: train on the latents of this frozen autoencoder component

    def __post_init__(self) -> None:
        super().__post_init__()
        for name in ("sample_every", "sample_steps"):
            if getattr(self, name) <= 0:
                raise DifflabError(f"--{name.replace('_', '-')} must be > 0, got {getattr(self, name)}")
        if self.ema_decay is None:
            raise DifflabError("ema_decay: a diffusion model samples from its EMA weights; give a decay in [0, 1)")
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
        for name in ("resolution", "low_res"):
            if getattr(self, name) is not None and getattr(self, name) < 1:
                raise DifflabError(f"train.{name} must be >= 1 pixels, got {getattr(self, name)}")
        if self.autoencoder is not None and (self.resolution is not None or self.low_res is not None):
            raise DifflabError("--autoencoder (latent diffusion) does not combine with train.resolution or "
                               "train.low_res")
        if not self.low_res_augmentation >= 0 or (self.low_res_augmentation and self.low_res is None):
            raise DifflabError(f"train.low_res_augmentation must be >= 0 and goes with train.low_res, got "
                               f"{self.low_res_augmentation}")
        if self.max_timestep is not None and (self.max_timestep < 1 or self.loss not in ("simple", "hybrid")):
            raise DifflabError(f"train.max_timestep (a refiner's levels) must be >= 1 and goes with loss simple or "
                               f"hybrid; got {self.max_timestep} with loss {self.loss!r}")


@dataclass(frozen=True)
class ExperimentConfig:
    network: UNetConfig | MLPConfig = field(default_factory=UNetConfig)
    schedule: ScheduleConfig = field(default_factory=ScheduleConfig)
    prediction: Prediction = "eps"
    train: TrainConfig = field(default_factory=TrainConfig)
    precond: PrecondConfig = field(default_factory=VPConfig)  # vp: `schedule` and `prediction`; edm: its own
    data_shape: tuple[int, ...] = (1, 28, 28)  # one example, filled in from the data set
    class_names: tuple[str, ...] | None = None
    student_grid: StudentGrid | None = None  # a progressive-distillation student: the grid it is valid for
    consistency_levels: ConsistencyLevels | None = None  # a consistency model: its training and re-noising levels

    def __post_init__(self) -> None:
        learned = self.network.learned_variance
        edm = isinstance(getattr(self.precond, "inner", self.precond), EDMConfig)  # a consistency model's inner
        if edm != (self.train.loss == "edm"):
            raise DifflabError("train.loss 'edm' goes with precond.kind 'edm', and losses simple, hybrid and vlb with "
                               f"precond.kind 'vp'; got loss {self.train.loss!r} with {self.precond.kind!r}")
        if edm and self.prediction != "eps":
            raise DifflabError("prediction applies to the vp preconditioning; an edm model's output is set by "
                               "its scalings: leave prediction out")
        if self.train.loss == "hybrid" and not learned:
            raise DifflabError("train.loss 'hybrid' trains a learned variance: set network.learned_variance to true")
        if self.train.loss == "simple" and learned:
            raise DifflabError("network.learned_variance needs train.loss 'hybrid' or 'vlb' "
                               "(L_simple does not train it)")
        if (self.train.max_timestep or 0) > self.schedule.timesteps:
            raise DifflabError(f"train.max_timestep must be <= the schedule's {self.schedule.timesteps} timesteps, got "
                               f"{self.train.max_timestep}")

    def to_dict(self) -> dict[str, Any]:
        return {
            "network": network_spec(self.network),
            "schedule": asdict(self.schedule),
            "prediction": self.prediction,
            "precond": asdict(self.precond),
            "train": asdict(self.train),
            "data_shape": list(self.data_shape),
            "class_names": None if self.class_names is None else list(self.class_names),
            **({} if self.student_grid is None else {"student_grid": asdict(self.student_grid)}),
            **({} if self.consistency_levels is None else {"consistency_levels": asdict(self.consistency_levels)}),
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
            precond=precond_config(spec.get("precond", {"kind": "vp"})),
            train=_typed(TrainConfig, spec.get("train", {}), "train"),
            data_shape=tuple(spec.get("data_shape", (1, 28, 28))),
            class_names=None if spec.get("class_names") is None else tuple(spec["class_names"]),
            student_grid=None if spec.get("student_grid") is None else StudentGrid(**spec["student_grid"]),
            consistency_levels=(None if spec.get("consistency_levels") is None
                                else _typed(ConsistencyLevels, spec["consistency_levels"], "consistency_levels")),
        )


def _typed(cls, spec: dict[str, Any], section: str):
    unknown = set(spec) - {f.name for f in fields(cls)}
    if unknown:
        raise DifflabError(f"config.{section}: unknown field(s) {', '.join(sorted(unknown))}")
    return cls(**spec)


def read_json_object(path: str | Path, what: str) -> dict[str, Any]:
    """The JSON object in a file; a missing file, bad JSON or another value gives one line starting with `what`."""
    path = Path(path)
    try:
        spec = json.loads(path.read_text())
    except FileNotFoundError:
        raise DifflabError(f"{what}: file {path} not found") from None
    except json.JSONDecodeError as err:
        raise DifflabError(f"{what}: {path} is not valid JSON ({err})") from None
    if not isinstance(spec, dict):
        raise DifflabError(f"{what}: {path} must hold a JSON object")
    return spec


def load_config(path: str | Path) -> ExperimentConfig:
    return ExperimentConfig.from_dict(read_json_object(path, "--config"))
