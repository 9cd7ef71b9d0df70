"""What a training run optimises, as the one loop (difflab.train.loop) sees it, and the diffusion objective.

An objective owns the module it trains and says
  param_groups()            the trainable parameters, as AdamW groups (each with an lr_scale)
  draw(index, x0, labels, generator) -> {name: per-row tensor | Condition | None}
                            all randomness of a global batch, drawn from the loop's seeded stream in a fixed
                            order, so data-parallel ranks and resumed runs agree (each rank takes its rows)
  bind(module)              the module to run the loss through (compiled and/or DistributedDataParallel)
  loss(x0, draw) -> (per-sample loss [B], record [B] | None)   the record is gathered over ranks for observe()
  observe(draw, records)    e.g. the loss history of importance-sampled timesteps
  state() / load_state()    its own state to save, as named sections of tensors
  frozen                    components it uses but does not train: referred to by file and hash, never copied
"""

from __future__ import annotations

import torch
from torch import nn

from difflab.conditioning import Condition
from difflab.denoiser import Denoiser
from difflab.objectives import Decoder, LossKind, draw_edm_noise, draw_noise, training_loss
from difflab.train.checkpoint import ComponentRef
from difflab.train.conditions import TrainingConditions
from difflab.train.importance import LossHistorySampler
from difflab.train.low_res import LowResConditions
from difflab.train.optim import param_groups

Draw = dict[str, torch.Tensor | Condition | None]


class Objective:
    """Base of the objectives: no frozen components, no records to observe, no state of its own."""

    module: nn.Module
    frozen: dict[str, ComponentRef] = {}

    def param_groups(self) -> list[dict]:
        return [{"params": [p for p in self.module.parameters() if p.requires_grad], "lr_scale": 1.0}]

    def draw(self, index: torch.Tensor, x0: torch.Tensor, labels: torch.Tensor | None,
             generator: torch.Generator) -> Draw:
        raise NotImplementedError

    def bind(self, module: nn.Module) -> None:
        self.train_module = module

    def loss(self, x0: torch.Tensor, draw: Draw) -> tuple[torch.Tensor, torch.Tensor | None]:
        raise NotImplementedError

    def observe(self, draw: Draw, records: torch.Tensor) -> None:
        """Records of the whole global batch (a loss returned some)."""

    def state(self) -> dict[str, dict[str, torch.Tensor]]:
        return {}

    def load_state(self, state: dict[str, dict[str, torch.Tensor]]) -> None:
        """Restore what state() returned."""


class DiffusionObjective(Objective):
    """simple / hybrid / vlb / edm losses of a denoiser network, with condition dropout and, for L_vlb,
    timesteps importance-sampled from the loss history (Nichol & Dhariwal 2021, Sec. 3.3)."""

    def __init__(self, denoiser: Denoiser, kind: LossKind, conditions: TrainingConditions, *,
                 label_lr_scale: float = 1.0, min_snr_gamma: float | None = None, vlb_weight: float = 0.001,
                 decoder: Decoder = "discretized", low_res: LowResConditions | None = None,
                 max_timestep: int | None = None):
        self.denoiser, self.kind, self.conditions, self.low_res = denoiser, kind, conditions, low_res
        self.max_timestep = max_timestep  # a refiner: only the low-noise levels t < max_timestep
        self.module, self.precond = denoiser.net, denoiser.precond
        self.label_lr_scale, self.min_snr_gamma, self.vlb_weight, self.decoder = (label_lr_scale, min_snr_gamma,
                                                                                  vlb_weight, decoder)
        self.t_sampler = LossHistorySampler(self.precond.schedule.timesteps) if kind == "vlb" else None

    def param_groups(self) -> list[dict]:
        return param_groups(self.module, self.label_lr_scale)

    def draw(self, index: torch.Tensor, x0: torch.Tensor, labels: torch.Tensor | None,
             generator: torch.Generator) -> Draw:
        cond = self.conditions(index, labels, generator)
        if self.low_res is not None:  # super-resolution: the (augmented) low-resolution image, drawn after the rest
            cond = self.low_res(x0, cond, generator)
        if self.kind == "edm":
            level, eps = draw_edm_noise(self.precond.config, tuple(x0.shape), generator, dtype=x0.dtype)
        else:
            level, eps = draw_noise(self.precond.schedule, tuple(x0.shape), generator, dtype=x0.dtype,
                                    t_sampler=self.t_sampler, max_timestep=self.max_timestep)
        # importance weights 1 / (T p_t) keep the L_vlb estimate unbiased (Nichol & Dhariwal 2021, Eq. 18)
        weights = None if self.t_sampler is None else self.t_sampler.weights(level).float()
        return {"cond": cond, "level": level, "eps": eps, "weights": weights}

    def bind(self, module: nn.Module) -> None:
        self.train_denoiser = Denoiser(module, self.precond, self.denoiser.learned_variance)

    def loss(self, x0: torch.Tensor, draw: Draw) -> tuple[torch.Tensor, torch.Tensor | None]:
        per_sample = training_loss(self.kind, self.train_denoiser, x0, draw["cond"], noise=(draw["level"], draw["eps"]),
                                   min_snr_gamma=self.min_snr_gamma, vlb_weight=self.vlb_weight,
                                   decoder=self.decoder).float()
        if draw["weights"] is None:
            return per_sample, None
        return per_sample * draw["weights"], per_sample

    def observe(self, draw: Draw, records: torch.Tensor) -> None:
        self.t_sampler.update(draw["level"], records)

    def state(self) -> dict[str, dict[str, torch.Tensor]]:
        return {} if self.t_sampler is None else {"importance": self.t_sampler.state_dict()}

    def load_state(self, state: dict[str, dict[str, torch.Tensor]]) -> None:
        if self.t_sampler is not None:
            self.t_sampler.load_state_dict(state["importance"])
