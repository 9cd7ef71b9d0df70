"""The web UI's sampler settings that difflab honours (modules/shared_options.py): set for the server by POST
/sdapi/v1/options and for one request by its override_settings, which win, as the UI's process_images applies them.

- eta_ddim and eta_ancestral: the eta of a request whose body gives none, for DDIM and for the k-diffusion samplers
  that take one (Euler a, DPM2 a, DPM++ 2S a, the SDE samplers) (sd_samplers_common.Sampler.initialize: p.eta, else
  the setting). The infotext writes it where it differs from the sampler's default, as it writes a body's eta.
- uni_pc_order, uni_pc_variant, uni_pc_skip_type and uni_pc_lower_order_final: the UI's UniPC's
  (sd_samplers_timesteps_impl.unipc; difflab's options order and solver_type, and its grid under the Automatic
  schedule: time_uniform is linspace, logSNR is log_snr). difflab's UniPC has orders 1-3 and the variants bh1 and bh2,
  and always lowers its order on the last steps: a setting it cannot run (an order over 3, vary_coeff, time_quadratic,
  lower_order_final false) runs the nearest it can (order 3, bh1, time_uniform, true) with a warning.
The settings of a difflab sampler name (`unipc`, `euler_ancestral`) are its own options, not the UI's settings.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from difflab.grids import GridKind
from difflab.pipelines.dialect import RequestError
from difflab.pipelines.samplers import SAMPLER_NAMES, SamplerName, sampler_options
from difflab.samplers.unipc import ORDERS, SOLVER_TYPES
from difflab.serve.options import ETA_DDIM_SAMPLERS

# the settings and the UI's defaults for them
SAMPLER_SETTINGS: dict[str, Any] = {"eta_ddim": 0.0, "eta_ancestral": 1.0, "uni_pc_variant": "bh1",
                                    "uni_pc_skip_type": "time_uniform", "uni_pc_order": 3,
                                    "uni_pc_lower_order_final": True}
UNIPC_VARIANTS = ("bh1", "bh2", "vary_coeff")
UNIPC_SKIP_TYPES: dict[str, GridKind | None] = {"time_uniform": "linspace", "time_quadratic": None,
                                               "logSNR": "log_snr"}  # -> difflab's grid (None: none)
UNIPC_MAX_ORDER = 50  # the UI's slider
UNIPC = "UniPC"


@dataclass(frozen=True)
class SettingsRun:
    """What the settings do to one sampler name: its options, its grid under the Automatic schedule (None: the name's
    own), the infotext entries they add beyond the options' and warnings."""

    options: dict[str, Any]
    grid: GridKind | None = None
    infotext: tuple[tuple[str, Any], ...] = ()
    warnings: tuple[str, ...] = ()


def checked_settings(given: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """The sampler settings among `given`, each checked as the UI's setting takes it; a RequestError names the field
    (`prefix` + the setting)."""
    checked = {}
    for key in (key for key in SAMPLER_SETTINGS if key in given):
        value, field = given[key], prefix + key
        number = isinstance(value, (int, float)) and not isinstance(value, bool)
        if key.startswith("eta_"):
            ok, words = number and value >= 0, "a number >= 0"
        elif key == "uni_pc_order":
            ok, words = number and float(value).is_integer() and 1 <= value <= UNIPC_MAX_ORDER, \
                f"an integer in 1..{UNIPC_MAX_ORDER}"
            value = int(value) if ok else value
        elif key == "uni_pc_lower_order_final":
            ok, words = isinstance(value, bool), "true or false"
        else:
            choices = UNIPC_VARIANTS if key == "uni_pc_variant" else tuple(UNIPC_SKIP_TYPES)
            ok, words = value in choices, f"one of {', '.join(choices)}"
        if not ok:
            raise RequestError(field, f"{field} must be {words}, got {value!r}")
        checked[key] = value
    return checked


def request_settings(override_settings: Mapping[str, Any] | None, server: Mapping[str, Any]) -> dict[str, Any]:
    """The sampler settings a request runs under: its override_settings over the server's over the UI's defaults."""
    return {**SAMPLER_SETTINGS, **server, **checked_settings(override_settings or {}, "override_settings.")}


def settings_run(sampler: SamplerName, settings: Mapping[str, Any], scheduled: bool) -> SettingsRun:
    """What `settings` do to a resolved sampler name; `scheduled`: the request chose a schedule (not Automatic)."""
    if not any(entry.name == sampler.name for entry in SAMPLER_NAMES):
        return SettingsRun({})  # a difflab name: its own options
    if sampler.name == UNIPC:
        return unipc_run(settings, scheduled)
    if "eta" not in sampler_options(sampler):
        return SettingsRun({})
    return SettingsRun({"eta": settings["eta_ddim" if sampler.sampler in ETA_DDIM_SAMPLERS else "eta_ancestral"]})


def unipc_run(settings: Mapping[str, Any], scheduled: bool) -> SettingsRun:
    order, variant, skip = settings["uni_pc_order"], settings["uni_pc_variant"], settings["uni_pc_skip_type"]
    warnings = []
    if order > max(ORDERS):
        warnings.append(f"uni_pc_order {order}: difflab's UniPC has orders 1-{max(ORDERS)}; ran order {max(ORDERS)}")
    if variant not in SOLVER_TYPES:
        warnings.append(f"uni_pc_variant {variant}: difflab's UniPC has {' and '.join(SOLVER_TYPES)}; ran bh1")
    if UNIPC_SKIP_TYPES[skip] is None and not scheduled:
        warnings.append(f"uni_pc_skip_type {skip}: difflab has no such grid; ran time_uniform")
    if not settings["uni_pc_lower_order_final"]:
        warnings.append("uni_pc_lower_order_final false: difflab's UniPC lowers its order on the last steps; ran true")
    grid = None if scheduled or skip == SAMPLER_SETTINGS["uni_pc_skip_type"] else UNIPC_SKIP_TYPES[skip]
    return SettingsRun({"order": min(order, max(ORDERS)), "solver_type": variant if variant in SOLVER_TYPES else "bh1"},
                       grid, (("UniPC skip type", skip),) if grid is not None else (), tuple(warnings))
