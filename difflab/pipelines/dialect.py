"""How a caller of the generation pipeline speaks: the CLI's flags, or the AUTOMATIC1111 web UI's API fields.

Rules about a request are written once, in difflab.pipelines; their messages name each field the way its caller
does (`--negative-class` on the command line, `negative_prompt` in the API), so every error is one sentence the
caller can act on.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from difflab.errors import DifflabError

WEB_UI_NEUTRAL_CFG = 1.0  # the web UI's cfg_scale is 1 + w, so 1 is no guidance


class RequestError(DifflabError):
    """A request field the model or pipeline cannot honour; the message names it, `field` as its caller does
    (the server answers 422 with both)."""

    def __init__(self, field: str, message: str):
        super().__init__(message)
        self.field, self.message = field, message


@dataclass(frozen=True)
class Dialect:
    """A caller's names for a Request's fields (default: the CLI's flag `--field-name`, or in the web UI dialect the
    field's own name) and for the model, and whether it speaks the web UI's API: its sampler names, its guidance
    scale cfg_scale = 1 + w, and clients that always send a prompt and a negative prompt, so what a model cannot
    use is dropped there with a warning instead of refused."""

    names: Mapping[str, str] = field(default_factory=dict)  # Request field -> the caller's name for it
    model: str = "this checkpoint"
    web_ui: bool = False

    def name(self, field: str) -> str:
        return self.names.get(field, field if self.web_ui else "--" + field.replace("_", "-"))

    @property
    def neutral_cfg(self) -> float:
        """The caller's guidance value that means none: --cfg is w, the web UI's cfg_scale is 1 + w."""
        return WEB_UI_NEUTRAL_CFG if self.web_ui else 0.0

    def error(self, field: str, message: str) -> RequestError:
        return RequestError(self.name(field), message)

    def refuse(self, field: str, reason: str) -> RequestError:
        """The error "<field's name> <reason>"."""
        return self.error(field, f"{self.name(field)} {reason}")


CLI = Dialect({"label": "--class", "negative_label": "--negative-class", "percentile": "--threshold-percentile"})
