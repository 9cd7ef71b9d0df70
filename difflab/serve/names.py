"""The names a web UI request gives: sampler (with an optional scheduler suffix), scheduler and upscaler, resolved as
the UI resolves them (difflab.pipelines.samplers states the case rule).

Like the UI since v1.9 (sd_samplers.get_sampler_and_scheduler), an unknown sampler or scheduler falls back to the
default (the first sampler name, DPM++ 2M; Automatic), here with a warning in `info`; a server started with
--strict-names refuses it with 422 instead. A request that names no sampler gets Euler, the UI API's sampler_index
default. A scheduler suffix in the sampler name wins over the `scheduler` field, as in the UI.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeVar

from difflab.grids import GridKind
from difflab.pipelines.dialect import Dialect, RequestError
from difflab.pipelines.samplers import (AUTOMATIC, OMITTED_SAMPLER, SAMPLER_NAMES, SCHEDULER_NAMES, SamplerName,
                                        SchedulerName, find_scheduler, offered_samplers, resolve_sampler,
                                        split_scheduler)
from difflab.serve.resize import DEFAULT_UPSCALER, UPSCALERS

T = TypeVar("T")


@dataclass(frozen=True)
class Names:
    sampler: SamplerName  # on the grid the scheduler (suffix or field) asks for
    grid: GridKind | None  # the grid asked for; None: the one the sampler name and model imply
    scheduler: SchedulerName  # as chosen (suffix or field); AUTOMATIC: the sampler's own schedule
    upscaler: str | None  # None: no resize asked for
    warnings: tuple[str, ...]


def resolve_names(sampler_name: str | None, scheduler: str | None, upscaler: str | None, resizing: bool,
                  dialect: Dialect, strict: bool) -> Names:
    """The sampler, grid and upscaler a request names; what is unknown falls back to the default with a warning,
    or is a RequestError when `strict`."""
    warnings: list[str] = []

    def lenient(resolve: Callable[[], T], fallback: Callable[[], T], default: str) -> T:
        try:
            return resolve()
        except RequestError as err:
            if strict:
                raise
            warnings.append(f"{err.message}; used {default}")
            return fallback()

    default = offered_samplers()[0].name
    name = sampler_name or OMITTED_SAMPLER
    _, suffix = split_scheduler(name)
    chosen = suffix or (AUTOMATIC if scheduler is None else
                        lenient(lambda: find_scheduler(scheduler, dialect), lambda: AUTOMATIC, AUTOMATIC.label))
    grid = chosen.grid if suffix is None else None  # a suffix is resolved with the name
    sampler = lenient(lambda: resolve_sampler(name, grid, dialect),
                      lambda: resolve_sampler(default, chosen.grid, dialect), repr(default))
    chosen_upscaler = lenient(lambda: find_upscaler(upscaler or DEFAULT_UPSCALER, dialect), lambda: DEFAULT_UPSCALER,
                              DEFAULT_UPSCALER) if resizing else None
    return Names(sampler, chosen.grid, chosen, chosen_upscaler, tuple(warnings))


def find_upscaler(name: str, dialect: Dialect) -> str:
    """The upscaler a name spells, in any case."""
    found = [known for known in UPSCALERS if known.lower() == name.lower()]
    if not found:
        raise dialect.error("hr_upscaler", f"unknown upscaler {name!r}: hr_upscaler must be one of "
                                           f"{', '.join(UPSCALERS)}")
    return found[0]


def schedule_type(sampler: SamplerName, scheduler: SchedulerName) -> str | None:
    """The UI's "Schedule type" of a resolved sampler (sd_samplers_kdiffusion.get_sigmas): the label of a scheduler
    chosen by name ("Normal" is written as Normal though it runs difflab's linspace, as Uniform does); under
    "Automatic", the label of the grid it runs on, unless that is the grid of a name without a schedule of its own in
    the UI (Euler: the UI writes none); None then."""
    if scheduler is not AUTOMATIC:
        return scheduler.label
    entry = next(entry for entry in SAMPLER_NAMES if entry.name == sampler.name)
    if sampler.grid == entry.grid and entry.scheduler is None:
        return None
    return next((entry.label for entry in SCHEDULER_NAMES if entry.grid == sampler.grid), None)
