"""Consistency distillation (CD) and consistency training (CT) as an objective on the one trainer.

Both minimise lambda(t_n) d(f_theta(x_{t_{n+1}}, t_{n+1}), f_theta-(x_hat_{t_n}, t_n)) over adjacent levels of an
N-level Karras grid t_1 = sigma_min < ... < t_N = sigma_max (Song et al. 2023, Eq. 7 and Alg. 2-3):
- CD: x_hat_{t_n} is one Heun step of the frozen teacher's probability-flow ODE from x_{t_{n+1}} = x0 + t_{n+1} z;
- CT: x_hat_{t_n} = x0 + t_n z with the same z (the teacher-free estimate), with the curriculum N(k), mu(k) of
  Song et al. 2023, App. C;
- improved CT (Song & Dhariwal 2023, "iCT"): no EMA target (theta- = stopgrad theta), the doubling curriculum
  N(k) = min(s0 2^floor(k / K'), s1) + 1, discretised log-normal levels, lambda = 1 / (t_{n+1} - t_n) and the
  pseudo-Huber metric.
The target network theta- (an EMA of the student with rate mu) is this objective's own state, saved with the run,
with the recipe (as JSON bytes), which a resumed run must share.
"""

from __future__ import annotations

import copy
import json
import math
from dataclasses import asdict, dataclass
from typing import Literal

import torch
from torch import nn

from difflab.denoiser import Denoiser
from difflab.distill.student import ConsistencyLevels
from difflab.errors import DifflabError
from difflab.grids import karras_sigmas
from difflab.samplers.common import to_d
from difflab.schedules import append_dims
from difflab.train.checkpoint import ComponentRef
from difflab.train.objective import Draw, Objective

Metric = Literal["pseudo_huber", "l2"]
Curriculum = Literal["fixed", "ct", "ict"]
LevelSampling = Literal["uniform", "lognormal"]


@dataclass(frozen=True)
class ConsistencyRecipe:
    """What a CD/CT run optimises. Defaults: CD as Song et al. 2023 (N = 18, mu = 0.95); CT and iCT change them."""

    curriculum: Curriculum = "fixed"  # fixed N (CD), CT's N(k) and mu(k), or iCT's doubling N(k) without EMA target
    levels: int = 18  # N of the fixed curriculum
    mu: float = 0.95  # target EMA rate of the fixed curriculum (0: no EMA target)
    s0: int = 2  # CT: N(k) from s0 + 1 ... (iCT: 10)
    s1: int = 150  # ... to s1 + 1 levels (iCT: 1280)
    mu0: float = 0.9  # CT: mu(k) = exp(s0 log mu0 / N(k))
    metric: Metric = "pseudo_huber"
    level_sampling: LevelSampling = "uniform"
    p_mean: float = -1.1  # iCT's log-normal levels
    p_std: float = 2.0
    rho: float = 7.0

    def __post_init__(self) -> None:
        if self.curriculum not in ("fixed", "ct", "ict"):
            raise DifflabError(f"--curriculum must be fixed, ct or ict, got {self.curriculum!r}")
        if self.metric not in ("pseudo_huber", "l2"):
            raise DifflabError(f"--metric must be pseudo_huber or l2, got {self.metric!r}")
        if self.level_sampling not in ("uniform", "lognormal"):
            raise DifflabError(f"--level-sampling must be uniform or lognormal, got {self.level_sampling!r}")
        if self.levels < 2 or not 1 <= self.s0 < self.s1:
            raise DifflabError(f"need --levels >= 2 and 1 <= s0 < s1, got {self.levels}, {self.s0}, {self.s1}")
        if not (0 <= self.mu < 1 and 0 <= self.mu0 < 1):
            raise DifflabError(f"--mu and mu0 must lie in [0, 1), got {self.mu}, {self.mu0}")


# Song & Dhariwal 2023 (iCT): s0 = 10, s1 = 1280, no EMA target, pseudo-Huber, log-normal levels
IMPROVED = {"curriculum": "ict", "s0": 10, "s1": 1280, "mu": 0.0, "metric": "pseudo_huber",
            "level_sampling": "lognormal"}


def levels_at(recipe: ConsistencyRecipe, k: int, total: int) -> int:
    """N(k), the number of levels at training step k of `total`."""
    if recipe.curriculum == "fixed":
        return recipe.levels
    if recipe.curriculum == "ct":
        # Song et al. 2023, App. C: N(k) = ceil(sqrt(k/K ((s1 + 1)^2 - s0^2) + s0^2) - 1) + 1
        return math.ceil(math.sqrt(k / total * ((recipe.s1 + 1) ** 2 - recipe.s0**2) + recipe.s0**2) - 1) + 1
    # Song & Dhariwal 2023, Eq. 8: N(k) = min(s0 2^floor(k / K'), s1) + 1, K' = floor(K / (log2 floor(s1/s0) + 1))
    stage = max(1, math.floor(total / (math.log2(recipe.s1 // recipe.s0) + 1)))
    return min(recipe.s0 * 2 ** (k // stage), recipe.s1) + 1


def target_rate(recipe: ConsistencyRecipe, levels: int) -> float:
    """mu of the target EMA: fixed, CT's mu(k) = exp(s0 log mu0 / N(k)), or 0 (iCT: theta- = stopgrad theta)."""
    if recipe.curriculum == "ct":
        return math.exp(recipe.s0 * math.log(recipe.mu0) / levels)  # Song et al. 2023, App. C
    return recipe.mu if recipe.curriculum == "fixed" else 0.0


def level_grid(sigma_min: float, sigma_max: float, n: int, rho: float) -> torch.Tensor:
    """t_1 < ... < t_N (ascending), Karras et al.'s rho spacing (Song et al. 2023, Sec. 5)."""
    return karras_sigmas(sigma_min, sigma_max, n, rho).flip(0)


def draw_levels(recipe: ConsistencyRecipe, t: torch.Tensor, batch: int, generator: torch.Generator) -> torch.Tensor:
    """Indices n in {0 .. N-2} of the pair (t_n, t_{n+1}): uniform, or iCT's discretised log-normal,
    p(n) ~ erf((log t_{n+1} - P_mean) / (sqrt 2 P_std)) - erf((log t_n - P_mean) / (sqrt 2 P_std))."""
    if recipe.level_sampling == "uniform":
        return torch.randint(0, len(t) - 1, (batch,), generator=generator)
    cdf = torch.erf((t.log() - recipe.p_mean) / (math.sqrt(2) * recipe.p_std))  # Song & Dhariwal 2023, Eq. 10
    return torch.multinomial(cdf[1:] - cdf[:-1], batch, replacement=True, generator=generator)


def distance(a: torch.Tensor, b: torch.Tensor, metric: Metric) -> torch.Tensor:
    """Per-sample d(a, b): pseudo-Huber sqrt(||a - b||^2 + c^2) - c with c = 0.00054 sqrt(dim) (Song & Dhariwal
    2023, Sec. 3.3), or the squared L2 ||a - b||^2 (Song et al. 2023)."""
    squared = (a - b).pow(2).flatten(1).sum(1)
    if metric == "l2":
        return squared
    c = 0.00054 * math.sqrt(a[0].numel())
    return torch.sqrt(squared + c**2) - c


def heun_step(teacher, x: torch.Tensor, t_from: torch.Tensor, t_to: torch.Tensor) -> torch.Tensor:
    """One Heun step of the PF-ODE dx/dt = (x - D(x, t)) / t from t_from to t_to > 0 [B] (Karras et al. 2022,
    Alg. 1 lines 5-7; Song et al. 2023, Eq. 7's Phi)."""
    d = to_d(x, t_from, teacher(x, t_from))
    h = append_dims(t_to - t_from, x.ndim).to(x.dtype)
    x_euler = x + h * d
    return x + h * (d + to_d(x_euler, t_to, teacher(x_euler, t_to))) / 2


class ConsistencyObjective(Objective):
    """CD (with a teacher) or CT (without) of a student with the consistency preconditioning."""

    def __init__(self, student: Denoiser, recipe: ConsistencyRecipe, total_steps: int, *,
                 teacher: Denoiser | None = None, teacher_ref: ComponentRef | None = None):
        if student.precond.kind != "consistency":
            raise DifflabError("consistency training needs a student with precond.kind consistency")
        self.student, self.module, self.recipe, self.total = student, student.net, recipe, total_steps
        self.teacher = None if teacher is None else teacher.eval().requires_grad_(False)
        self.frozen = {} if teacher_ref is None else {"teacher": teacher_ref}
        config = student.precond.config
        self.sigma_min, self.sigma_max = config.sigma_min, student.sigma_max
        uses_target = recipe.curriculum == "ct" or (recipe.curriculum == "fixed" and recipe.mu > 0)
        # theta-, starting as the student (built after any initialisation from the teacher's weights)
        self.target = copy.deepcopy(self.module).requires_grad_(False) if uses_target else None
        self.k = 0  # completed steps, for the curriculum

    def draw(self, index, x0: torch.Tensor, labels, generator: torch.Generator) -> Draw:
        """The step's levels and noise; called once per step, so it also moves theta- towards theta
        (theta- <- mu theta- + (1 - mu) theta after each update, Song et al. 2023, Alg. 2 line 10)."""
        levels = levels_at(self.recipe, self.k, self.total)
        mu = target_rate(self.recipe, levels)
        if mu > 0 and self.k > 0:
            with torch.no_grad():
                torch._foreach_lerp_(list(self.target.parameters()), [p.detach() for p in self.module.parameters()],
                                     1 - mu)
        self.k += 1
        t = level_grid(self.sigma_min, self.sigma_max, levels, self.recipe.rho)
        n = draw_levels(self.recipe, t, x0.shape[0], generator)
        z = torch.randn(x0.shape, generator=generator, dtype=x0.dtype)
        return {"t_n": t[n], "t_next": t[n + 1], "z": z, "mu": torch.full((x0.shape[0],), mu, dtype=torch.float64)}

    def bind(self, module: nn.Module) -> None:
        self.train_denoiser = Denoiser(module, self.student.precond)
        device = next(self.module.parameters()).device
        for net in (self.target, None if self.teacher is None else self.teacher):
            if net is not None:
                net.to(device)

    def loss(self, x0: torch.Tensor, draw: Draw) -> tuple[torch.Tensor, None]:
        t_n, t_next, z = draw["t_n"].to(x0.device), draw["t_next"].to(x0.device), draw["z"]
        x_next = x0 + append_dims(t_next, x0.ndim).to(x0.dtype) * z  # x_{t_{n+1}} = x0 + t_{n+1} z
        with torch.no_grad():
            if self.teacher is not None:
                x_hat = heun_step(self.teacher, x_next.double(), t_next, t_n).to(x0.dtype)  # CD, Alg. 2
            else:
                x_hat = x0 + append_dims(t_n, x0.ndim).to(x0.dtype) * z  # CT, Alg. 3
            target_net = self.target if float(draw["mu"][0]) > 0 else self.module  # iCT: stopgrad theta
            target = Denoiser(target_net, self.student.precond)(x_hat, t_n)
        online = self.train_denoiser(x_next, t_next)
        # lambda(t_n): 1 (Song et al. 2023), 1 / (t_{n+1} - t_n) for iCT (Song & Dhariwal 2023, Sec. 3.4)
        weight = 1 / (t_next - t_n) if self.recipe.curriculum == "ict" else torch.ones_like(t_n)
        return weight.float() * distance(online, target, self.recipe.metric).float(), None

    def trained_levels(self) -> ConsistencyLevels:
        """The levels of the last step's grid, descending: where f has been fitted."""
        levels = levels_at(self.recipe, max(self.k - 1, 0), self.total)
        grid = level_grid(self.sigma_min, self.sigma_max, levels, self.recipe.rho)
        return ConsistencyLevels(tuple(grid.flip(0).tolist()))

    def state(self) -> dict[str, dict[str, torch.Tensor]]:
        recipe = torch.tensor(list(json.dumps(asdict(self.recipe)).encode()), dtype=torch.uint8)
        sections = {"progress": {"k": torch.tensor(self.k)}, "recipe": {"json": recipe}}
        if self.target is not None:
            sections["target"] = {k: v.detach().cpu() for k, v in self.target.state_dict().items()}
        return sections

    def load_state(self, state: dict[str, dict[str, torch.Tensor]]) -> None:
        recorded = state.get("recipe")  # absent from runs interrupted before the recipe was saved: taken on trust
        saved = json.loads(bytes(recorded["json"].tolist())) if recorded else asdict(self.recipe)
        differ = [name for name, value in asdict(self.recipe).items() if saved.get(name) != value]
        if differ:
            raise DifflabError(f"--resume: the run was saved with another consistency recipe ({', '.join(differ)}); "
                               f"give the flags it was started with")
        self.k = int(state["progress"]["k"])
        if "target" in state:
            self.target.load_state_dict(state["target"])
