"""The sampler a request names, the grid it runs on, and the sampler options it may pass.

A name is a difflab sampler (`difflab samplers`, on its default grid unless a grid is given) or one of the
AUTOMATIC1111 web UI's names ("DPM++ 2M Karras"), each of which stands for a difflab sampler on a grid; a web UI name
may end in a scheduler's label ("Euler a Karras", as the UI's v1.9+ infotexts and clients write it).

Case rule: the web UI matches names exactly (dict lookups and str.endswith, so "euler a" is not "Euler a" there and
falls back to its default sampler). difflab ignores case for every sampler name, sampler alias, scheduler name, label
and alias: whatever the web UI accepts resolves to the same entry here, and a spelling that differs only in case
resolves to the entry it spells instead of to the default.
"""

from __future__ import annotations

import inspect
from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import Any

from difflab.grids import GridKind
from difflab.pipelines.dialect import Dialect
from difflab.samplers import SAMPLERS, unipc

DEFAULT_GRID: GridKind = "trailing"  # of a difflab sampler named without a grid and not in SAMPLER_GRIDS
SIGMA_GRIDS = ("karras", "log_snr")  # grids spaced in sigma, which need no timestep table
# Each sampler's own grid on a discrete schedule (bench/sampler_defaults.py, docs/sampler_defaults.json): the grid of
# lowest FD at 10 steps on the bundled model (n = 2,000) where it beats trailing (the default before) by more than
# twice the paired-bootstrap std of the gap, else trailing. euler and dpm_solver_1 take DDIM's update, euler_ancestral
# DDPM's (fixed variance) and paradigms_X reproduces X: each has the grid of the sampler it equals.
SAMPLER_GRIDS: dict[str, GridKind] = {
    "ddim": "trailing", "euler": "trailing", "dpm_solver_1": "trailing", "paradigms_ddim": "trailing",
    "ddpm": "trailing", "euler_ancestral": "trailing", "paradigms_ddpm": "trailing",
    "dpmpp_2m": "karras", "paradigms_dpmpp_2m": "karras", "dpmpp_2m_sde": "karras", "dpmpp_3m": "trailing",
    "heun": "log_snr", "dpm_solver_2": "log_snr", "dpm_solver_3": "karras", "dpmpp_2s": "karras", "unipc": "karras",
    "dpm_2": "log_snr", "dpm_2_ancestral": "log_snr", "dpmpp_2s_ancestral": "trailing", "dpmpp_3m_sde": "trailing",
}


def on_model(grid: GridKind, model_grid: GridKind) -> GridKind:
    """`grid` on a model whose default grid is `model_grid`: a model with continuous levels (`model_grid` a sigma
    grid, EDM's karras) has no timestep table, so a timestep grid becomes the model's."""
    return model_grid if model_grid in SIGMA_GRIDS and grid not in SIGMA_GRIDS else grid


def default_grid(sampler: str, model_grid: GridKind = DEFAULT_GRID) -> GridKind:
    """The grid a difflab sampler runs on unless told: its own (SAMPLER_GRIDS) on the model (on_model)."""
    return on_model(SAMPLER_GRIDS.get(sampler, DEFAULT_GRID), model_grid)


@dataclass(frozen=True)
class SamplerName:
    """One sampler as its caller names it (a web UI name comes with the aliases its API accepts) and what runs it."""

    name: str
    sampler: str  # difflab registry name
    grid: GridKind  # the grid the name runs on under the "Automatic" schedule
    aliases: tuple[str, ...] = ()
    scheduler: str | None = None  # the web UI's own schedule for it ("karras"), which "Automatic" stands for
    options: tuple[tuple[str, Any], ...] = ()  # the web UI's settings for it, in place of the sampler's defaults


# The UI's names as of v1.9 (modules/sd_samplers_kdiffusion.py, sd_samplers_timesteps.py and sd_samplers_lcm.py), in
# its order; the first is its default for an unknown name. A k-diffusion sampler with a schedule of its own in the UI
# ("scheduler": "karras" for DPM++ 2M, "exponential" for the SDE ones) runs on it under "Automatic"; one without runs
# on k-diffusion's DiscreteSchedule.get_sigmas, timesteps evenly spaced from T-1 down to 0 ("linspace"). DDIM and PLMS
# use CompVis' uniform timestep spacing ("leading"). "Karras" is Karras et al. 2022, Eq. 5 with rho = 7;
# "Exponential" is uniform in log sigma ("log_snr"). The UI's older names with a schedule in them ("DPM++ 2M Karras")
# resolve, as there, as the name plus a scheduler suffix. The UI's LCM (modules/sd_samplers_lcm.py: x = denoised,
# then x += sigma_next z) is multistep consistency sampling, difflab's `consistency`; its own grid (LCM's 50-step
# subgrid) has no difflab twin, so it runs on consistency's default, trailing, whose last level is not wasted on
# sigma_min where f(x, sigma_min) = x. The ParaDiGMS names are difflab's own, after the UI's: each runs on the grid of
# the UI name it parallelises. The UI's UniPC (modules/sd_samplers_timesteps_impl.py) runs the paper's code with the
# UI's settings uni_pc_order 3 and uni_pc_variant bh1 on its own time-uniform levels (t from 1 to 1/1000 evenly: the
# timesteps 999 to 0, ending at sigma_min), difflab's linspace but for its last step, to sigma = 0 here. Only entries
# whose sampler is registered are offered.
SAMPLER_NAMES: tuple[SamplerName, ...] = (
    SamplerName("DPM++ 2M", "dpmpp_2m", "karras", ("k_dpmpp_2m",), "karras"),
    SamplerName("DPM++ SDE", "dpmpp_sde", "karras", ("k_dpmpp_sde",), "karras"),
    SamplerName("DPM++ 2M SDE", "dpmpp_2m_sde", "log_snr", ("k_dpmpp_2m_sde",), "exponential"),
    SamplerName("DPM++ 2M SDE Heun", "dpmpp_2m_sde_heun", "log_snr", ("k_dpmpp_2m_sde_heun",), "exponential"),
    SamplerName("DPM++ 2S a", "dpmpp_2s_ancestral", "karras", ("k_dpmpp_2s_a",), "karras"),
    SamplerName("DPM++ 3M SDE", "dpmpp_3m_sde", "log_snr", ("k_dpmpp_3m_sde",), "exponential"),
    SamplerName("Euler a", "euler_ancestral", "linspace", ("k_euler_a", "k_euler_ancestral")),
    SamplerName("Euler", "euler", "linspace", ("k_euler",)),
    SamplerName("LMS", "lms", "linspace", ("k_lms",)),
    SamplerName("Heun", "heun", "linspace", ("k_heun",)),
    SamplerName("DPM2", "dpm_2", "karras", ("k_dpm_2",), "karras"),
    SamplerName("DPM2 a", "dpm_2_ancestral", "karras", ("k_dpm_2_a",), "karras"),
    SamplerName("DPM fast", "dpm_fast", "linspace", ("k_dpm_fast",)),
    SamplerName("DPM adaptive", "dpm_adaptive", "linspace", ("k_dpm_ad",)),
    SamplerName("Restart", "restart", "karras", ("restart",), "karras"),
    SamplerName("DDIM", "ddim", "leading", ("ddim",)),
    SamplerName("DDIM CFG++", "ddim_cfgpp", "leading", ("ddim_cfgpp",)),
    SamplerName("PLMS", "plms", "leading", ("plms",)),
    SamplerName("UniPC", "unipc", "linspace", ("unipc",), options=(("order", 3), ("solver_type", "bh1"))),
    SamplerName("LCM", "consistency", "trailing", ("k_lcm",)),
    SamplerName("ParaDiGMS DDIM", "paradigms_ddim", "leading"),
    SamplerName("ParaDiGMS DDPM", "paradigms_ddpm", "leading"),
    SamplerName("ParaDiGMS DPM++ 2M", "paradigms_dpmpp_2m", "karras", (), "karras"),
)
# The sampler of a web UI request that names none: the UI API's sampler_index default (modules/api/models.py)
OMITTED_SAMPLER = "Euler"


@dataclass(frozen=True)
class SchedulerName:
    """One of the web UI's schedulers (modules/sd_schedulers.py): its name, label and aliases, and the difflab grid
    it stands for (None: the grid its sampler name implies, or no difflab grid yet, see `offered`)."""

    name: str
    label: str
    grid: GridKind | None
    aliases: tuple[str, ...] = ()
    default_rho: float = -1.0
    need_inner_model: bool = False
    offered: bool = True

    def spellings(self) -> tuple[str, ...]:
        return (self.name, self.label, *self.aliases)


# The UI's schedulers, in its order. Its "Uniform" (DiscreteSchedule.get_sigmas: timesteps evenly spaced from T-1 to
# 0) and "Normal" (sigma_to_t of sigma_max..sigma_min evenly spaced: the same timesteps on a discrete model) are
# difflab's linspace grid; "Karras" is Karras et al. 2022, Eq. 5 with rho = 7; "Exponential" is uniform in log sigma
# (log_snr). The others have no difflab grid yet.
SCHEDULER_NAMES: tuple[SchedulerName, ...] = (
    SchedulerName("automatic", "Automatic", None),
    SchedulerName("uniform", "Uniform", "linspace", need_inner_model=True),
    SchedulerName("karras", "Karras", "karras", default_rho=7.0),
    SchedulerName("exponential", "Exponential", "log_snr"),
    SchedulerName("polyexponential", "Polyexponential", None, default_rho=1.0, offered=False),
    SchedulerName("sgm_uniform", "SGM Uniform", None, ("SGMUniform",), need_inner_model=True, offered=False),
    SchedulerName("kl_optimal", "KL Optimal", None, offered=False),
    SchedulerName("align_your_steps", "Align Your Steps", None, offered=False),
    SchedulerName("simple", "Simple", None, need_inner_model=True, offered=False),
    SchedulerName("normal", "Normal", "linspace", need_inner_model=True),
    SchedulerName("ddim", "DDIM", None, need_inner_model=True, offered=False),
    SchedulerName("beta", "Beta", None, need_inner_model=True, offered=False),
)
AUTOMATIC = SCHEDULER_NAMES[0]

# option name -> (is the value allowed, the allowed range in words); the CLI checks choices in argparse
OPTION_RANGES = {
    "eta": (lambda v: v >= 0, ">= 0"),
    "s_churn": (lambda v: v >= 0, ">= 0"),
    "s_tmin": (lambda v: v >= 0, ">= 0"),
    "s_tmax": (lambda v: v > 0, "> 0"),
    "s_noise": (lambda v: v > 0, "> 0"),
    "rtol": (lambda v: 0 < v < 1, "in (0, 1)"),
    "atol": (lambda v: v > 0, "> 0"),
    "snr": (lambda v: v > 0, "> 0"),
    "langevin_steps": (lambda v: v >= 1, ">= 1"),
    "step_size": (lambda v: v > 0, "> 0"),
    "variance": (lambda v: True, ""),
    "sde": (lambda v: True, ""),
    "window": (lambda v: v >= 1, ">= 1"),
    "tolerance": (lambda v: v >= 0, ">= 0"),
    "order": (lambda v: v in unipc.ORDERS, "1, 2 or 3"),
    "solver_type": (lambda v: v in unipc.SOLVER_TYPES, "bh1 or bh2"),
}


def offered_samplers() -> list[SamplerName]:
    """The web UI entries whose difflab sampler is registered, in the UI's order; the first is its default."""
    return [entry for entry in SAMPLER_NAMES if entry.sampler in SAMPLERS]


def offered_schedulers() -> list[SchedulerName]:
    return [entry for entry in SCHEDULER_NAMES if entry.offered]


def find_scheduler(name: str, dialect: Dialect) -> SchedulerName:
    """The scheduler a name, label or alias spells (in any case); unknown, or without a difflab grid, is an error."""
    valid = ", ".join(entry.label for entry in offered_schedulers())
    matches = [entry for entry in SCHEDULER_NAMES if name.lower() in map(str.lower, entry.spellings())]
    if not matches:
        raise dialect.error("grid", f"unknown scheduler {name!r}: {dialect.name('grid')} must be one of {valid} "
                                    f"(or their lower-case names)")
    if not matches[0].offered:
        raise dialect.refuse("grid", f"{name!r} needs a grid difflab does not have yet; choose from {valid}")
    return matches[0]


def split_scheduler(name: str) -> tuple[str, SchedulerName | None]:
    """A sampler name without its trailing scheduler label or alias ("Euler a Karras" -> "Euler a", Karras), as the
    UI's get_sampler_and_scheduler splits it; (name, None) when it has none."""
    for entry in SCHEDULER_NAMES:
        for spelling in (entry.label, *entry.aliases):
            if name.lower().endswith(" " + spelling.lower()):
                return name[: -len(spelling) - 1], entry
    return name, None


def resolve_sampler(name: str, grid: GridKind | None, dialect: Dialect,
                    model_grid: GridKind = DEFAULT_GRID) -> SamplerName:
    """What `name` runs, on `grid` or else the grid the name implies: a difflab sampler (the CLI's own names win),
    else a web UI name or alias, else a web UI name with a scheduler suffix (the only names the web UI dialect takes).

    `model_grid` is the model's default grid (Denoiser.default_grid): a difflab name runs on its own default
    (default_grid), and on a model with continuous noise levels (an EDM model: karras) a name that implies timestep
    spacing runs on the model's grid instead."""
    if not dialect.web_ui and name in SAMPLERS:
        return SamplerName(name, name, grid or default_grid(name, model_grid))
    offered = offered_samplers()
    web_ui_names = ", ".join(entry.name for entry in offered)
    valid = web_ui_names if dialect.web_ui else f"{', '.join(sorted(SAMPLERS))} or a web UI name ({web_ui_names})"
    base, suffix = split_scheduler(name)
    matches = [entry for entry in SAMPLER_NAMES if name.lower() in (entry.name.lower(), *entry.aliases)]
    if not matches and suffix is not None:
        matches = [replace(entry, grid=suffix.grid or entry.grid) for entry in SAMPLER_NAMES
                   if base.lower() == entry.name.lower()]
        if matches and not suffix.offered:
            raise dialect.refuse("sampler", f"{name!r} ends in scheduler {suffix.label!r}, which needs a grid difflab "
                                            f"does not have yet")
    if not matches:
        raise dialect.error("sampler", f"unknown sampler {name!r}: {dialect.name('sampler')} must be one of {valid}")
    if matches[0].sampler not in SAMPLERS:
        raise dialect.refuse("sampler", f"{name!r} needs sampler {matches[0].sampler!r}, which difflab does not have "
                                        f"yet; choose from {valid}")
    return replace(matches[0], grid=grid or on_model(matches[0].grid, model_grid))


def sampler_options(sampler: SamplerName) -> set[str]:
    """The keyword options (OPTION_RANGES) that the sampler behind a name takes."""
    return set(option_defaults(sampler))


def option_defaults(sampler: SamplerName) -> dict[str, Any]:
    """Each keyword option (OPTION_RANGES) that the sampler behind a name takes -> its default value."""
    parameters = inspect.signature(SAMPLERS[sampler.sampler].fn).parameters
    return {**{name: parameters[name].default for name in OPTION_RANGES if name in parameters}, **dict(sampler.options)}


def check_option(option: str, value: Any, dialect: Dialect) -> None:
    allowed, words = OPTION_RANGES[option]
    if not allowed(value):
        raise dialect.refuse(option, f"must be {words}, got {value}")


def choose_sampler(name: str, grid: GridKind | None, sections: str | None, options: Mapping[str, Any],
                   denoiser, dialect: Dialect) -> tuple[SamplerName, dict[str, Any]]:
    """The sampler and grid a request names, and its options checked against them and the model (its default grid,
    whether it learned its variance); an option the sampler or the model cannot take is an error."""
    sampler = resolve_sampler(name, grid, dialect, denoiser.default_grid)
    options = {**dict(sampler.options), **options}  # a web UI name's settings, unless the request sets them
    accepted = sampler_options(sampler)
    for option, value in options.items():
        if option not in accepted:
            raise dialect.refuse(option, f"does not apply to sampler {sampler.name!r}")
        check_option(option, value, dialect)
    if options.get("s_tmin", 0.0) > options.get("s_tmax", float("inf")):
        raise dialect.refuse("s_tmin", f"must be <= {dialect.name('s_tmax')}, got {options['s_tmin']} > "
                                       f"{options['s_tmax']}")
    if sections is not None and sampler.grid != "respaced":
        raise dialect.refuse("sections", f"applies only to {dialect.name('grid')} respaced, got "
                                         f"{dialect.name('grid')} {sampler.grid}")
    if options.get("variance") == "learned" and not denoiser.learned_variance:
        raise dialect.error("variance", f"{dialect.name('variance')} learned needs a model trained with learned "
                                        f"variance (--loss hybrid or vlb)")
    return sampler, dict(options)
