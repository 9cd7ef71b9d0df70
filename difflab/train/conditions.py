"""The condition of each training example: its class label and/or a true caption, with dropout to the null."""

from __future__ import annotations

from typing import Literal

import torch

from difflab.conditioning import Condition, ConditionKind
from difflab.data import Dataset
from difflab.data.captions import Captioner

CondKind = Literal["none", "class", "text", "class+text"]
COND_KINDS = ("none", "class", "text", "class+text")


def condition_kinds(kind: CondKind) -> frozenset[ConditionKind]:
    """The condition kinds a --cond value trains: "class+text" -> {class, text}, "none" -> {}."""
    return frozenset(kind.split("+")) - {"none"}


class TrainingConditions:
    """Draws a batch's Condition from the training RNG stream, so data-parallel ranks and resumed runs agree.

    - class: the label; text: a caption sampled for the image; with probability p_uncond the null instead.
    - class+text: one network for both: null with probability p_uncond, else the label alone or a caption alone
      with equal odds, so each is learnt as a condition on its own (sampling uses one or the other).
    """

    def __init__(self, kind: CondKind, p_uncond: float, data: Dataset):
        self.kinds, self.p_uncond = condition_kinds(kind), p_uncond
        self.captioner = self.captions = None
        if "text" in self.kinds:
            from difflab.text.encoder import text_encoder

            self.captioner = Captioner.for_dataset(data)
            self.captions = text_encoder().encode(self.captioner.captions)  # every caption encoded once

    def __call__(self, index: torch.Tensor, labels: torch.Tensor | None,
                 generator: torch.Generator) -> Condition | None:
        if not self.kinds:
            return None
        # the draws, in this order and only for the kinds in use, are part of exact resume: keep them
        drop = torch.rand(labels.shape, generator=generator) < self.p_uncond
        text = None
        if self.captioner is not None:
            text = self.captions[self.captioner.sample(index, labels, generator)]
        cond = Condition(labels if "class" in self.kinds else None, text)
        if self.kinds == {"class", "text"}:
            use_text = torch.rand(labels.shape, generator=generator) < 0.5
            cond = cond.drop(use_text, kinds=("class",)).drop(~use_text, kinds=("text",))
        return cond.drop(drop)
