"""Sampler registry: every sampler is a plain function f(denoiser, x, sigmas, *, generator, callback, **options).

`x` is the starting point at sigmas[0] in VE coordinates; `sigmas` a descending grid ending in 0.
The CLI, the web app and the contract tests all read SAMPLERS.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from difflab.errors import DifflabError


@dataclass(frozen=True)
class SamplerInfo:
    name: str
    fn: Callable
    order: int
    stochastic: bool
    nfe_per_step: int
    description: str


SAMPLERS: dict[str, SamplerInfo] = {}


def register(name: str, *, order: int, stochastic: bool, nfe_per_step: int) -> Callable[[Callable], Callable]:
    """Add a sampler function to the registry under `name`; the docstring's first line describes it."""

    def wrap(fn: Callable) -> Callable:
        if name in SAMPLERS:
            raise ValueError(f"sampler {name!r} registered twice")
        doc = (fn.__doc__ or "").strip().splitlines()
        SAMPLERS[name] = SamplerInfo(name, fn, order, stochastic, nfe_per_step, doc[0] if doc else "")
        return fn

    return wrap


def get_sampler(name: str) -> SamplerInfo:
    if name not in SAMPLERS:
        raise DifflabError(f"--sampler: unknown sampler {name!r}; choose from {', '.join(sorted(SAMPLERS))}")
    return SAMPLERS[name]


# importing a family registers its samplers
from difflab.samplers import adaptive, ancestral, dpm_solver, langevin, ode, sde, svgd  # noqa: E402,F401
from difflab.samplers import consistency, paradigms, unipc  # noqa: E402,F401
