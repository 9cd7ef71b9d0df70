"""A user's request (class index or name, prompt text) turned into the one-row Condition a model accepts."""

from __future__ import annotations

import torch

from difflab.conditioning import Condition
from difflab.errors import DifflabError
from difflab.train.config import ExperimentConfig


def accepts_class(config: ExperimentConfig) -> bool:
    """The network has a class embedding (and the checkpoint the class names)."""
    return getattr(config.network, "num_classes", None) is not None and config.class_names is not None


def accepts_text(config: ExperimentConfig) -> bool:
    """The network attends to text tokens."""
    return getattr(config.network, "text_dim", None) is not None


def request_condition(config: ExperimentConfig, *, label: int | None = None, prompt: str | None = None,
                      class_names: tuple[str, ...] | None = None, label_flag: str = "--class",
                      prompt_flag: str = "--prompt") -> Condition | None:
    """One row: the class `label` and/or the encoded `prompt`; None when neither is given.

    `class_names` are those `label` indexes (the model's, or a guiding classifier's for an unconditional model);
    an empty prompt is the null text. A flag the model cannot take is an error that names it.
    """
    if label is None and not prompt:
        return None
    labels = text = None
    if label is not None:
        names = class_names if class_names is not None else config.class_names if accepts_class(config) else None
        if names is None:
            raise DifflabError(f"{label_flag} needs a class-conditional model (or --classifier); this checkpoint is "
                               f"{describe_conditioning(config)}")
        if not 0 <= label < len(names):
            raise DifflabError(f"{label_flag} must lie in 0..{len(names) - 1} ({', '.join(names)}), got {label}")
        labels = torch.tensor([label])
    if prompt:
        if not accepts_text(config):
            raise DifflabError(f"{prompt_flag} needs a text-conditional model; this checkpoint is "
                               f"{describe_conditioning(config)}")
        from difflab.text.encoder import text_encoder

        text = text_encoder().encode([prompt])
    return Condition(labels, text)


def is_conditional(config: ExperimentConfig) -> bool:
    return accepts_class(config) or accepts_text(config)


def describe_conditioning(config: ExperimentConfig) -> str:
    kinds = [kind for kind, accepted in (("class", accepts_class(config)), ("text", accepts_text(config))) if accepted]
    return " and ".join(kinds) + "-conditional" if kinds else "unconditional"
