"""The grid a progressive-distillation student is valid for, recorded in its config and checked at sampling."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from difflab.errors import DifflabError


@dataclass(frozen=True)
class StudentGrid:
    """The student's DDIM grid: `steps` levels of grid `kind` on its schedule (sigmas: the levels, ending in 0)."""

    kind: str
    steps: int
    sigmas: tuple[float, ...]

    def __post_init__(self) -> None:
        object.__setattr__(self, "sigmas", tuple(float(s) for s in self.sigmas))
        if len(self.sigmas) != self.steps + 1:
            raise DifflabError(f"student_grid: {self.steps} steps need {self.steps + 1} levels, got {len(self.sigmas)}")

    def flags(self, web_ui: bool = False) -> str:
        """How a caller asks for this grid: the CLI's flags, or the web UI's fields (its Automatic scheduler is the
        student's own grid, as a request without a grid gets it)."""
        if web_ui:
            return f"steps {self.steps} with scheduler Automatic"
        return f"--steps {self.steps} --grid {self.kind}"

    def check(self, sigmas: torch.Tensor, sampler: str, web_ui: bool = False) -> str | None:
        """None if sampling with `sampler` on `sigmas` is what the student learned, else why not (one sentence, with
        the remedy in the CLI's or, with `web_ui`, the web UI's names)."""
        if sampler not in STUDENT_SAMPLERS:
            field, names = ("sampler_name", STUDENT_SAMPLER_NAMES) if web_ui else ("--sampler", STUDENT_SAMPLERS)
            return (f"this progressive-distillation student takes DDIM steps: use {field} {' or '.join(names)}, "
                    f"not {sampler!r}")
        if len(sigmas) != len(self.sigmas) or not torch.allclose(sigmas.double().cpu(),
                                                                 torch.tensor(self.sigmas, dtype=torch.float64)):
            return (f"this progressive-distillation student is valid only on the {self.steps}-step {self.kind} grid "
                    f"it was distilled for: use {self.flags(web_ui)}")
        return None


STUDENT_SAMPLERS = ("ddim", "euler", "paradigms_ddim")  # DDIM(eta = 0) steps: euler is the same update in VE
STUDENT_SAMPLER_NAMES = ("DDIM", "Euler", "ParaDiGMS DDIM")  # the web UI's names of the same samplers
