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

    def flags(self) -> str:
        return f"--steps {self.steps} --grid {self.kind}"

    def check(self, sigmas: torch.Tensor, sampler: str) -> str | None:
        """None if sampling with `sampler` on `sigmas` is what the student learned, else why not (one sentence)."""
        if sampler not in STUDENT_SAMPLERS:
            return (f"this progressive-distillation student takes DDIM steps: use --sampler "
                    f"{' or '.join(STUDENT_SAMPLERS)}, not {sampler!r}")
        if len(sigmas) != len(self.sigmas) or not torch.allclose(sigmas.double().cpu(),
                                                                 torch.tensor(self.sigmas, dtype=torch.float64)):
            return (f"this progressive-distillation student is valid only on the {self.steps}-step {self.kind} grid "
                    f"it was distilled for: use {self.flags()}")
        return None


STUDENT_SAMPLERS = ("ddim", "euler", "paradigms_ddim")  # DDIM(eta = 0) steps: euler is the same update in VE
