"""What a distilled student records in its config for sampling: the grid a progressive-distillation student is valid
for (checked at sampling), and the levels a consistency model was trained at with its tuned re-noising levels."""

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


@dataclass(frozen=True)
class ConsistencyLevels:
    """A consistency model's training levels (descending, recorded when training ends: f is fitted only there) and
    the re-noising levels chosen for multistep sampling (descending, by `difflab distill levels`; empty until then)."""

    trained: tuple[float, ...]
    renoise: tuple[float, ...] = ()

    def __post_init__(self) -> None:
        for name in ("trained", "renoise"):
            object.__setattr__(self, name, tuple(float(s) for s in getattr(self, name)))
        if len(self.trained) < 2 or any(b >= a for a, b in zip(self.trained, self.trained[1:])):
            raise DifflabError(f"consistency_levels.trained must be 2+ levels in decreasing order, got {self.trained}")
        if any(b >= a for a, b in zip((self.trained[0],) + self.renoise, self.renoise)):
            raise DifflabError(f"consistency_levels.renoise must decrease from below {self.trained[0]:g}, got "
                               f"{self.renoise}")

    def sampling(self, steps: int) -> tuple[float, ...] | None:
        """The `steps` levels of multistep sampling (the top training level, then the first steps - 1 re-noising
        ones), or None when fewer have been chosen."""
        if not self.renoise or steps - 1 > len(self.renoise):
            return None
        return (self.trained[0],) + self.renoise[: steps - 1]
