"""Condition: every kind (labels, text, the image kinds, the noise-augmentation level) has its own null value and is
dropped per row; cat, slicing, repeat and to keep every kind; a network config declares the kinds it accepts."""

import pytest
import torch

from difflab.conditioning import (CONDITION_KINDS, IMAGE_KINDS, NULL_LABEL, TENSOR_KINDS, Condition, TensorCondition,
                                  TextEmbedding)
from difflab.nets.mlp import MLPConfig
from difflab.nets.unet import UNetConfig
from difflab.pipelines.conditions import accepted
from difflab.train.conditions import TrainingConditions
from difflab.train.config import ExperimentConfig

B = 4


def text(n: int, length: int = 3, dim: int = 5) -> TextEmbedding:
    g = torch.Generator().manual_seed(n)
    return TextEmbedding(torch.randn(n, length, dim, generator=g) + 2, torch.ones(n, length, dtype=torch.bool),
                         torch.randn(n, dim, generator=g) + 2)


def full_condition(n: int = B) -> Condition:
    """Every kind present on every row, no value zero."""
    g = torch.Generator().manual_seed(7)
    images = {kind: torch.rand(n, 1, 4, 4, generator=g) + 0.5 for kind in IMAGE_KINDS}
    return Condition(torch.arange(n) + 1, text(n), {**images, "noise_level": torch.rand(n, generator=g) + 0.5})


def test_each_kind_is_dropped_per_row_to_its_own_null():
    cond, rows = full_condition(), torch.tensor([True, False, True, False])
    dropped = cond.drop(rows)
    assert torch.equal(dropped.labels, torch.where(rows, NULL_LABEL, cond.labels))
    assert torch.equal(dropped.text.is_null, rows)
    assert torch.equal(dropped.text.tokens[~rows], cond.text.tokens[~rows])
    assert set(dropped.tensors) == set(TENSOR_KINDS)
    for kind, part in dropped.tensors.items():
        assert torch.equal(part.present, ~rows), kind
        assert not part.value[rows].any(), kind  # null rows are zeros
        assert torch.equal(part.value[~rows], cond.tensors[kind].value[~rows]), kind
    assert dropped.kinds == cond.kinds == frozenset(CONDITION_KINDS)


@pytest.mark.parametrize("kind", CONDITION_KINDS)
def test_drop_of_one_kind_leaves_the_others(kind):
    cond, rows = full_condition(), torch.tensor([False, True, True, False])
    dropped = cond.drop(rows, kinds=(kind,))
    assert torch.equal(dropped.labels == NULL_LABEL, rows if kind == "class" else torch.zeros(B, dtype=torch.bool))
    assert torch.equal(dropped.text.is_null, rows if kind == "text" else torch.zeros(B, dtype=torch.bool))
    for other, part in dropped.tensors.items():
        assert torch.equal(part.present, ~rows if other == kind else torch.ones(B, dtype=torch.bool)), other


def test_cat_slice_repeat_and_to_keep_every_kind():
    cond = full_condition()
    one = cond[1:2]
    assert one.kinds == cond.kinds and len(one) == 1
    assert torch.equal(one.tensors["control"].value, cond.tensors["control"].value[1:2])
    repeated = one.repeat(3)
    assert len(repeated) == 3 and repeated.kinds == cond.kinds
    for kind, part in repeated.tensors.items():
        assert torch.equal(part.value, one.tensors[kind].value.expand(3, *part.value.shape[1:])), kind
        assert part.present.all(), kind
    assert torch.equal(repeated.labels, torch.full((3,), 2))
    assert torch.equal(repeated.text.pooled[2], one.text.pooled[0])
    moved = cond.to("cpu")
    assert moved.kinds == cond.kinds
    assert torch.equal(moved.tensors["noise_level"].value, cond.tensors["noise_level"].value)

    # a part without a kind (or None) is null there: labels -1, null text, zeros not present
    low_res_only = Condition(tensors={"low_res": torch.ones(2, 1, 4, 4)})
    joined = Condition.cat([cond, low_res_only, None], [B, 2, 3])
    assert len(joined) == B + 5 and joined.kinds == cond.kinds
    assert torch.equal(joined.labels[B:], torch.full((5,), NULL_LABEL))
    assert torch.equal(joined.text.is_null, torch.arange(B + 5) >= B)
    assert torch.equal(joined.tensors["low_res"].present, torch.arange(B + 5) < B + 2)
    assert torch.equal(joined.tensors["low_res"].value[B:B + 2], torch.ones(2, 1, 4, 4))
    assert torch.equal(joined.tensors["control"].present, torch.arange(B + 5) < B)
    assert not joined.tensors["control"].value[B:].any() and not joined.tensors["noise_level"].value[B:].any()
    assert Condition.cat([None, Condition()], [1, 2]) is None


def test_a_tensor_kind_is_checked():
    with pytest.raises(ValueError, match="unknown kind 'depth'"):
        Condition(tensors={"depth": torch.zeros(2, 1, 4, 4)})
    with pytest.raises(ValueError, match=r"Condition.tensors\['noise_level'\] must be \[B\]"):
        Condition(tensors={"noise_level": torch.zeros(2, 1)})
    with pytest.raises(ValueError, match="same rows"):
        Condition(torch.zeros(3, dtype=torch.long), tensors={"mask": torch.zeros(2, 1, 4, 4)})
    explicit = TensorCondition(torch.ones(2, 1, 4, 4), torch.tensor([True, False]))
    assert torch.equal(Condition(tensors={"mask": explicit}).tensors["mask"].present, torch.tensor([True, False]))


def test_network_configs_declare_the_kinds_they_accept():
    assert UNetConfig().accepts == frozenset() and MLPConfig().accepts == frozenset()
    assert UNetConfig(num_classes=10).accepts == {"class"} and UNetConfig(text_dim=8).accepts == {"text"}
    assert UNetConfig(num_classes=10, text_dim=8).accepts == {"class", "text"}
    assert MLPConfig(num_classes=3).accepts == {"class"}
    assert UNetConfig(num_classes=10, text_dim=8).accepts <= set(CONDITION_KINDS)
    # a checkpoint without class names cannot resolve a class: it does not accept one
    network = {"kind": "unet", "num_classes": 2, "text_dim": 8}
    assert accepted(ExperimentConfig.from_dict({"network": network, "class_names": ["a", "b"]})) == {"class", "text"}
    assert accepted(ExperimentConfig.from_dict({"network": network})) == {"text"}


def test_class_training_conditions_draw_only_their_dropout():
    """A class-only run draws one uniform per example from the training stream, nothing for kinds it does not use
    (exact resume depends on the order and number of draws)."""
    labels = torch.arange(8) % 3
    generator = torch.Generator().manual_seed(3)
    cond = TrainingConditions("class", 0.5, data=None)(torch.arange(8), labels, generator)
    reference = torch.Generator().manual_seed(3)
    drop = torch.rand(8, generator=reference) < 0.5
    assert torch.equal(cond.labels, torch.where(drop, NULL_LABEL, labels)) and cond.text is None and not cond.tensors
    assert torch.equal(generator.get_state(), reference.get_state())
    assert TrainingConditions("none", 0.5, data=None)(torch.arange(8), labels, generator) is None
