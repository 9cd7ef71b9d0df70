"""The sampler options of a web UI body (eta, s_churn, s_tmin, s_tmax, s_noise and difflab's ParaDiGMS fields) and of
the UI's settings (difflab.serve.settings): checked against their ranges and the sampler that takes them, and written
into the infotext as the UI writes them."""

from __future__ import annotations

from typing import Any

from difflab.pipelines.dialect import Dialect
from difflab.pipelines.samplers import SamplerName, check_option, option_defaults, sampler_options
from difflab.serve.schemas import Txt2ImgRequest

# the sampler options a body may give -> their infotext keys (modules/sd_samplers_kdiffusion.py; ParaDiGMS's are
# difflab's own)
SAMPLER_OPTION_FIELDS = {"eta": "Eta", "s_churn": "Sigma churn", "s_tmin": "Sigma tmin", "s_tmax": "Sigma tmax",
                         "s_noise": "Sigma noise", "window": "ParaDiGMS window", "tolerance": "ParaDiGMS tolerance"}
# option -> its body field: the UI's own name, or difflab's for the options the UI does not have
OPTION_BODY_FIELDS = {**{name: name for name in SAMPLER_OPTION_FIELDS},
                      "window": "difflab_parallel_window", "tolerance": "difflab_parallel_tolerance"}
# the infotext keys of the UniPC options the UI's settings set (difflab.serve.settings; its OptionInfo infotext names)
SETTING_OPTION_FIELDS = {"order": "UniPC order", "solver_type": "UniPC variant"}
NO_OP_OPTIONS = {"s_churn": 0.0, "s_tmin": 0.0, "s_noise": 1.0}  # the UI's values that change nothing
# The UI writes eta as "Eta DDIM" for its timestep samplers (DDIM, default 0) and as "Eta" for k-diffusion's (default
# 1), and every option only where it differs from its sampler's default (modules/sd_samplers_common.py,
# eta_infotext_field and eta_default); ParaDiGMS DDIM writes as the DDIM it parallelises.
ETA_DDIM_SAMPLERS = {"ddim", "paradigms_ddim"}


def options_of(body: Txt2ImgRequest, sampler: SamplerName, dialect: Dialect,
               settings: dict[str, Any] | None = None) -> tuple[dict[str, Any], list[str]]:
    """The sampler options a body gives over those the UI's `settings` give (difflab.serve.settings), each checked
    against its range; those the sampler does not take are left out, with a warning unless they are the UI's no-op
    defaults (it sends s_churn 0 and s_noise 1 to every sampler)."""
    given = {name: getattr(body, field) for name, field in OPTION_BODY_FIELDS.items()
             if getattr(body, field) is not None}
    if given.get("s_tmax") == 0:  # the UI's s_tmax 0 means no upper bound
        del given["s_tmax"]
    for name, value in given.items():
        check_option(name, value, dialect)
    takes = sampler_options(sampler)
    dropped = [f"{OPTION_BODY_FIELDS[name]} ignored: sampler {sampler.name!r} does not use it"
               for name, value in given.items() if name not in takes and value != NO_OP_OPTIONS.get(name)]
    return {**(settings or {}), **{name: value for name, value in given.items() if name in takes}}, dropped


def option_fields(sampler: SamplerName, options: dict[str, Any]) -> dict[str, Any]:
    """The infotext entries of the sampler options a request set: those that differ from the sampler's defaults."""
    defaults = option_defaults(sampler)
    keys = {**SAMPLER_OPTION_FIELDS, **SETTING_OPTION_FIELDS}
    return {"Eta DDIM" if name == "eta" and sampler.sampler in ETA_DDIM_SAMPLERS else keys[name]: value
            for name, value in options.items() if value != defaults[name]}
