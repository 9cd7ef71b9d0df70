"""The one interface the rest of difflab sees: D(x, sigma, cond) -> x0_hat in VE coordinates.

A network F(x_in, c_noise, cond) sits inside a preconditioning that says how the level enters and how its output
becomes x0_hat (Karras et al. 2022, Eq. 7: D(x, sigma) = c_skip x + c_out F(c_in x, c_noise)):
- VPPrecond: a network trained on a discrete VP schedule to predict eps, x0 or v at an integer timestep; it sees
  x_t = x / sqrt(1 + sigma^2) and the timestep found from sigma (today's DDPM models);
- EDMPrecond: EDM's scalings over continuous sigma, with sigma_data from the config (Karras et al. 2022, Table 1).
Both give the training target of F, so a loss is one regression in the network's output space for either form.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
from torch import nn

from difflab.conditioning import Condition
from difflab.errors import DifflabError
from difflab.prediction import Prediction, check_prediction, training_target, x0_from_output
from difflab.schedules import DiscreteSchedule, append_dims, vp_coefficients

@dataclass(frozen=True)
class EDMConfig:
    """EDM's preconditioning and noise levels (Karras et al. 2022, Table 1, the "Ours" column)."""

    kind: Literal["edm"] = "edm"
    sigma_data: float = 0.5  # std of the data
    sigma_min: float = 0.002  # the sampling range
    sigma_max: float = 80.0
    p_mean: float = -1.2  # training levels: ln sigma ~ N(P_mean, P_std^2)
    p_std: float = 1.2

    def __post_init__(self) -> None:
        if not self.sigma_data > 0:
            raise DifflabError(f"precond.sigma_data must be > 0, got {self.sigma_data}")
        if not 0 < self.sigma_min < self.sigma_max:
            raise DifflabError(f"precond: need 0 < sigma_min < sigma_max, got {self.sigma_min}, {self.sigma_max}")
        if not self.p_std > 0:
            raise DifflabError(f"precond.p_std must be > 0, got {self.p_std}")


@dataclass(frozen=True)
class VPConfig:
    """The discrete VP adapter; its schedule and prediction type are the experiment's `schedule` and `prediction`."""

    kind: Literal["vp"] = "vp"


@dataclass(frozen=True)
class ConsistencyConfig:
    """A consistency model's boundary-condition scalings (Song et al. 2023, App. C) around the network's own
    preconditioning `inner` (vp or edm), whose denoiser output the scalings re-weight."""

    kind: Literal["consistency"] = "consistency"
    sigma_data: float = 0.5
    sigma_min: float = 0.002  # the boundary level epsilon, where f(x, sigma_min) = x exactly
    inner: VPConfig | EDMConfig = VPConfig()

    def __post_init__(self) -> None:
        if isinstance(self.inner, dict):
            object.__setattr__(self, "inner", precond_config(self.inner))
        if isinstance(self.inner, ConsistencyConfig):
            raise DifflabError("precond.inner of a consistency model must be vp or edm")
        if not (self.sigma_data > 0 and self.sigma_min > 0):
            raise DifflabError(f"precond: consistency needs sigma_data > 0 and sigma_min > 0, got {self.sigma_data}, "
                               f"{self.sigma_min}")


PrecondConfig = VPConfig | EDMConfig | ConsistencyConfig


def precond_config(spec: dict) -> PrecondConfig:
    """Parse {'kind': 'vp'|'edm'|'consistency', **fields}, naming an unknown kind or field."""
    spec = dict(spec)
    cls = {"vp": VPConfig, "edm": EDMConfig, "consistency": ConsistencyConfig}.get(spec.get("kind", "vp"))
    if cls is None:
        raise DifflabError(f"precond.kind must be vp or edm (or consistency, around either), got {spec.get('kind')!r}")
    unknown = set(spec) - set(cls.__dataclass_fields__)
    if unknown:
        raise DifflabError(f"precond: unknown field(s) {', '.join(sorted(unknown))} for kind {spec['kind']!r}")
    return cls(**spec)


class ContinuousLevels:
    """The noise levels of an EDM model: a range [sigma_min, sigma_max] and no timestep table."""

    def __init__(self, config: EDMConfig):
        self.config = config
        self.sigma_min, self.sigma_max = config.sigma_min, config.sigma_max


class VPPrecond:
    """net(x_t, timestep, cond) of a discrete VP schedule: x_t = c_in x with c_in = 1/sqrt(1 + sigma^2), the timestep
    found from sigma in log space, and the output read as eps, x0 or v."""

    kind = "vp"

    def __init__(self, schedule: DiscreteSchedule, prediction: Prediction = "eps"):
        self.schedule = schedule
        self.prediction = check_prediction(prediction)

    def prior_std(self, sigma: float) -> float:
        """x_T ~ N(0, I) in VP coordinates is N(0, 1 + sigma^2) in VE coordinates."""
        return (1 + sigma**2) ** 0.5

    def inputs(self, x: torch.Tensor, sigma: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(c_in x, c_noise) for x [B, ...] at levels sigma [B]."""
        c_in, _ = vp_coefficients(append_dims(sigma.to(x.dtype), x.ndim))
        return c_in * x, self.schedule.timestep_from_sigma(sigma)

    def x0(self, x: torch.Tensor, sigma: torch.Tensor, output: torch.Tensor) -> torch.Tensor:
        return x0_from_output(self.prediction, x, append_dims(sigma.to(x.dtype), x.ndim), output)

    def target(self, x0: torch.Tensor, sigma: torch.Tensor, eps: torch.Tensor) -> torch.Tensor:
        """What the network regresses on for x = x0 + sigma eps: eps, x0 or v."""
        return training_target(self.prediction, append_dims(sigma.to(x0.dtype), x0.ndim), x0, eps)


def edm_scalings(sigma: torch.Tensor, sigma_data: float) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """EDM's (c_skip, c_out, c_in) at levels sigma (any shape) for data of std sigma_data (Karras et al. 2022,
    Table 1)."""
    c_skip = sigma_data**2 / (sigma**2 + sigma_data**2)  # sigma_data^2 / (sigma^2 + sigma_data^2)
    c_out = sigma * sigma_data / torch.sqrt(sigma**2 + sigma_data**2)  # sigma sigma_data / sqrt(sigma^2 + sigma_data^2)
    c_in = torch.rsqrt(sigma**2 + sigma_data**2)  # 1 / sqrt(sigma^2 + sigma_data^2)
    return c_skip, c_out, c_in


class EDMPrecond:
    """D(x, sigma) = c_skip x + c_out F(c_in x, c_noise) with EDM's scalings (Karras et al. 2022, Table 1)."""

    kind = "edm"

    def __init__(self, config: EDMConfig):
        self.config = config
        self.schedule = ContinuousLevels(config)

    def scalings(self, sigma: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(c_skip, c_out, c_in) at levels sigma (any shape)."""
        return edm_scalings(sigma, self.config.sigma_data)

    def prior_std(self, sigma: float) -> float:
        """EDM starts sampling from sigma_max * N(0, I) (Alg. 1, line 1); the data's own spread is neglected."""
        return sigma

    def inputs(self, x: torch.Tensor, sigma: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        _, _, c_in = self.scalings(append_dims(sigma.to(x.dtype), x.ndim))
        return c_in * x, torch.log(sigma.to(torch.float64)) / 4  # c_noise = ln(sigma) / 4

    def x0(self, x: torch.Tensor, sigma: torch.Tensor, output: torch.Tensor) -> torch.Tensor:
        c_skip, c_out, _ = self.scalings(append_dims(sigma.to(x.dtype), x.ndim))
        return c_skip * x + c_out * output  # Eq. 7

    def target(self, x0: torch.Tensor, sigma: torch.Tensor, eps: torch.Tensor) -> torch.Tensor:
        """F's target (x0 - c_skip x) / c_out for x = x0 + sigma eps (Eq. 8): the loss ||F - target||^2 is
        lambda(sigma) ||D - x0||^2 with lambda = 1 / c_out^2."""
        c_skip, c_out, _ = self.scalings(append_dims(sigma.to(x0.dtype), x0.ndim))
        return (x0 - c_skip * (x0 + append_dims(sigma.to(x0.dtype), x0.ndim) * eps)) / c_out


class ConsistencyPrecond:
    """f(x, sigma) = c_skip(sigma) x + c_out(sigma) F(x, sigma), exactly x at sigma = sigma_min (Song et al. 2023,
    Eq. 5 with the scalings of App. C). F is the inner preconditioning's EDM-form output,
    F = (D_inner(x, sigma) - c_skip^EDM x) / c_out^EDM: the raw network output for an EDM inner, and for any inner
    f -> D_inner where sigma >> sigma_min, so a student starts from its teacher's weights as the teacher's denoiser."""

    kind = "consistency"

    def __init__(self, config: ConsistencyConfig, inner: VPPrecond | EDMPrecond):
        self.config, self.inner = config, inner
        self.schedule = inner.schedule
        self.prediction = getattr(inner, "prediction", None)

    def scalings(self, sigma: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(c_skip, c_out) of the boundary condition at levels sigma (any shape)."""
        sigma_data, sigma_min = self.config.sigma_data, self.config.sigma_min
        c_skip = sigma_data**2 / ((sigma - sigma_min) ** 2 + sigma_data**2)  # sigma_d^2 / ((s - s_min)^2 + sigma_d^2)
        c_out = (sigma - sigma_min) * sigma_data / torch.sqrt(sigma_data**2 + sigma**2)  # (s - s_min) sigma_d / ...
        return c_skip, c_out

    def prior_std(self, sigma: float) -> float:
        return self.inner.prior_std(sigma)

    def inputs(self, x: torch.Tensor, sigma: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.inner.inputs(x, sigma)

    def x0(self, x: torch.Tensor, sigma: torch.Tensor, output: torch.Tensor) -> torch.Tensor:
        s = append_dims(sigma.to(x.dtype), x.ndim)
        edm_skip, edm_out, _ = edm_scalings(s, self.config.sigma_data)
        network = (self.inner.x0(x, sigma, output) - edm_skip * x) / edm_out  # F in EDM form
        c_skip, c_out = self.scalings(s)
        return c_skip * x + c_out * network  # Song et al. 2023, Eq. 5


Precond = VPPrecond | EDMPrecond | ConsistencyPrecond


class Denoiser(nn.Module):
    """D(x, sigma, cond) -> x0_hat for a network inside a preconditioning (VPPrecond or EDMPrecond).

    x is the VE-scaled input (x_t / alpha_t for a VP model) and sigma [B] its level.
    """

    def __init__(self, net: nn.Module, precond: Precond, learned_variance: bool | None = None):
        super().__init__()
        self.net = net
        self.precond = precond
        # whether net also outputs v; None: its config's learned_variance (give it for a wrapped network, e.g. DDP)
        self.learned_variance = bool(getattr(getattr(net, "config", None), "learned_variance", False)
                                     if learned_variance is None else learned_variance)
        if self.learned_variance and precond.kind != "vp":
            raise DifflabError("a learned variance needs the vp preconditioning (its Sigma interpolates beta_t)")

    @property
    def schedule(self) -> DiscreteSchedule | ContinuousLevels:
        """The levels the model knows: a discrete VP schedule, or EDM's continuous range."""
        return self.precond.schedule

    @property
    def prediction(self) -> Prediction | None:
        return getattr(self.precond, "prediction", None)

    @property
    def default_grid(self) -> str:
        """The model's grid: trailing timesteps on a VP schedule (Lin et al. 2024), Karras et al.'s rho = 7 spacing
        over EDM's continuous levels. A sampler named without a grid runs on its own default on this model
        (difflab.pipelines.samplers.default_grid)."""
        return "trailing" if isinstance(self.schedule, DiscreteSchedule) else "karras"

    @property
    def sigma_min(self) -> float:
        return self.schedule.sigma_min

    @property
    def sigma_max(self) -> float:
        return self.schedule.sigma_max

    def prior_std(self, sigma: float) -> float:
        """Std of the VE-scaled prior at level sigma."""
        return self.precond.prior_std(sigma)

    def split(self, output: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        """A network output -> (the prediction, the variance fraction v or None): a learned-variance network
        stacks [prediction, v] on the channel dimension (Nichol & Dhariwal 2021, Sec. 3.1)."""
        if not self.learned_variance:
            return output, None
        prediction, v = output.chunk(2, dim=1)
        return prediction, v

    def network_output(
        self, x: torch.Tensor, sigma: torch.Tensor, cond: Condition | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """(F's output, v) at VE input x and levels sigma [B], in the network's dtype: what losses regress on."""
        if sigma.ndim == 0:
            sigma = sigma.expand(x.shape[0])
        dtype = next(self.net.parameters()).dtype
        x_in, c_noise = self.precond.inputs(x, sigma)
        return self.split(self.net(x_in.to(dtype), c_noise.to(dtype), cond))

    def with_variance(
        self, x: torch.Tensor, sigma: torch.Tensor, cond: Condition | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """(x0_hat, v): v [B, C, ...] is the raw fraction of Sigma = exp(v log beta + (1 - v) log beta_tilde)
        (Nichol & Dhariwal 2021, Eq. 15), None for a fixed-variance model."""
        if sigma.ndim == 0:
            sigma = sigma.expand(x.shape[0])
        output, v = self.network_output(x, sigma, cond)
        x0_hat = self.precond.x0(x, sigma, output.to(x.dtype))
        return x0_hat, None if v is None else v.to(x.dtype)

    def forward(self, x: torch.Tensor, sigma: torch.Tensor, cond: Condition | None = None) -> torch.Tensor:
        return self.with_variance(x, sigma, cond)[0]


def build_precond(config: PrecondConfig, schedule: DiscreteSchedule, prediction: Prediction) -> Precond:
    """The preconditioning of an experiment: VP over its discrete schedule and prediction type, or EDM."""
    if isinstance(config, EDMConfig):
        return EDMPrecond(config)
    if isinstance(config, ConsistencyConfig):
        return ConsistencyPrecond(config, build_precond(config.inner, schedule, prediction))
    return VPPrecond(schedule, prediction)


def edm_sigma(n: int, config: EDMConfig, generator: torch.Generator | None, device=None) -> torch.Tensor:
    """Training levels [n]: ln sigma ~ N(P_mean, P_std^2) (Karras et al. 2022, Table 1)."""
    z = torch.randn(n, generator=generator, dtype=torch.float64)
    return torch.exp(config.p_mean + config.p_std * z).to(device)

