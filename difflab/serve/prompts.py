"""A web UI prompt field as the pipeline's condition: a class name (or index) on a class-only model, else text."""

from __future__ import annotations

from difflab.pipelines.dialect import RequestError
from difflab.serve.model import ServedModel


def prompt_fields(prompt: str, model: ServedModel, field: str) -> tuple[int | None, str | None]:
    """(label, prompt) of a prompt `field`: a class on a class-only model, else text (which the pipeline drops, with
    a warning, on an unconditional model)."""
    if model.conditioning == "class":
        return class_label(prompt, model, field), None
    return None, prompt.strip() or None


def class_label(prompt: str, model: ServedModel, field: str) -> int | None:
    """A class-conditional model's prompt (or negative prompt, `field`) is one class name (any case) or index;
    empty means none: an unconditional sample (or CFG's null label)."""
    names = model.class_names
    text = prompt.strip()
    if not text:
        return None
    lowered = [name.lower() for name in names]
    if text.lower() in lowered:
        return lowered.index(text.lower())
    if text.isdigit() and int(text) < len(names):
        return int(text)
    raise RequestError(field, f"{field} must be one class of model {model.name} (a name or 0..{len(names) - 1}: "
                              f"{', '.join(names)}) or empty; got {prompt!r}")
