"""What a model accepts, and a user's request (class index or name, prompt text) turned into the one-row Condition."""

from __future__ import annotations

import torch

from difflab.conditioning import Condition, ConditionKind
from difflab.pipelines.dialect import CLI, Dialect
from difflab.train.config import ExperimentConfig


def accepted(config: ExperimentConfig) -> frozenset[ConditionKind]:
    """The condition kinds a checkpoint's network declares (`network.accepts`), less class labels where the
    checkpoint has no class names for them."""
    kinds = config.network.accepts
    return kinds if config.class_names is not None else kinds - {"class"}


def describe_conditioning(config: ExperimentConfig) -> str:
    kinds = [kind for kind in ("class", "text") if kind in accepted(config)]
    return " and ".join(kinds) + "-conditional" if kinds else "unconditional"


def request_condition(config: ExperimentConfig, *, label: int | None = None, prompt: str | None = None,
                      class_names: tuple[str, ...] | None = None, label_field: str = "label",
                      prompt_field: str = "prompt", dialect: Dialect = CLI) -> Condition | None:
    """One row: the class `label` and/or the encoded `prompt`; None when neither is given.

    `class_names` are those `label` indexes (the model's, or a guiding classifier's for an unconditional model);
    an empty prompt is the null text. A field the model cannot take is an error that names it (`label_field` and
    `prompt_field` are the Request fields they came from, named in the caller's `dialect`).
    """
    if label is None and not prompt:
        return None
    kinds = accepted(config)
    labels = text = None
    if label is not None:
        names = class_names if class_names is not None else config.class_names if "class" in kinds else None
        if names is None:
            raise dialect.refuse(label_field, f"needs a class-conditional model (or {dialect.name('classifier')}); "
                                              f"{dialect.model} is {describe_conditioning(config)}")
        if not 0 <= label < len(names):
            raise dialect.refuse(label_field, f"must lie in 0..{len(names) - 1} ({', '.join(names)}), got {label}")
        labels = torch.tensor([label])
    if prompt:
        if "text" not in kinds:
            raise dialect.refuse(prompt_field, f"needs a text-conditional model; {dialect.model} is "
                                               f"{describe_conditioning(config)}")
        from difflab.text.encoder import text_encoder

        text = text_encoder().encode([prompt])
    return Condition(labels, text)
