"""Weight averaging of denoisers ("model soups", Wortsman et al. 2022): theta = sum_i w_i theta_i, sum_i w_i = 1,
over checkpoints of one network that share a starting point, e.g. runs fine-tuned or annealed from one checkpoint.

Each member gives its EMA weights (its raw weights where it has none). The members must agree on everything that
makes the weights mean the same function: network, schedule, prediction, preconditioning, data shape, classes, a
student's grid, a consistency model's training levels and the frozen components they refer to. Their training
recipes may differ. A consistency model's re-noising levels were chosen for one member's weights, so the average
records none (choose them anew with `difflab distill levels`).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path

import torch

from difflab.errors import DifflabError
from difflab.train.checkpoint import Checkpoint, load_denoiser, save_checkpoint, sha256_file
from difflab.train.config import ExperimentConfig

RECIPE_KEYS = ("train",)  # config sections that may differ between members


def member_weights(count: int, weights: Sequence[float] | None) -> list[float]:
    """The members' weights, normalised to sum 1 (uniform where none are given)."""
    if weights is None:
        return [1.0 / count] * count
    if len(weights) != count:
        raise DifflabError(f"--weights: {len(weights)} weights for {count} checkpoints")
    if any(not w >= 0 for w in weights) or sum(weights) <= 0:
        raise DifflabError(f"--weights must be >= 0 with a positive sum, got {list(weights)}")
    return [w / sum(weights) for w in weights]


def function_spec(config: ExperimentConfig) -> dict:
    """What two members must share for their weights to be averaged: the config without the training recipe and
    without the re-noising levels chosen for one member's weights."""
    spec = {k: v for k, v in config.to_dict().items() if k not in RECIPE_KEYS}
    if "consistency_levels" in spec:
        spec["consistency_levels"] = {"trained": spec["consistency_levels"]["trained"]}
    return spec


def frozen_parts(checkpoint: Checkpoint) -> dict[str, tuple[str, str]]:
    return {name: (ref.kind, ref.sha256) for name, ref in checkpoint.refs.items()}


def check_members(paths: Sequence[Path], checkpoints: Sequence[Checkpoint]) -> None:
    """Refuse, naming the first difference, members whose weights do not parameterise the same function."""
    first = function_spec(checkpoints[0].config)
    for path, checkpoint in zip(paths[1:], checkpoints[1:]):
        spec = function_spec(checkpoint.config)
        differs = sorted(k for k in first.keys() | spec.keys() if first.get(k) != spec.get(k))
        if differs:
            raise DifflabError(f"{path} cannot be averaged with {paths[0]}: they differ in {', '.join(differs)}")
        if frozen_parts(checkpoint) != frozen_parts(checkpoints[0]):
            raise DifflabError(f"{path} cannot be averaged with {paths[0]}: they refer to different frozen components "
                               f"({sorted(checkpoint.refs)} against {sorted(checkpoints[0].refs)})")


def weighted_average(states: Sequence[dict[str, torch.Tensor]], weights: Sequence[float]) -> dict[str, torch.Tensor]:
    """sum_i w_i theta_i per floating tensor, accumulated in float64; other tensors (counters) must be equal."""
    out = {}
    for name, first in states[0].items():
        if first.is_floating_point():
            total = sum(w * state[name].double() for w, state in zip(weights, states))  # sum_i w_i theta_i
            out[name] = total.to(first.dtype)
        elif all(torch.equal(first, state[name]) for state in states[1:]):
            out[name] = first
        else:
            raise DifflabError(f"the members' non-float tensor {name!r} differs between them, so it cannot be averaged")
    return out


def average_checkpoints(paths: Sequence[str | Path], out: str | Path,
                        weights: Sequence[float] | None = None) -> list[float]:
    """Write to `out` the inference-only denoiser whose weights are the weighted average of the members' (EMA)
    weights, with the first member's config (re-noising levels dropped), the members recorded in its metadata
    ("averaged_from": path, sha256, step and weight of each); returns the normalised weights."""
    paths = [Path(p) for p in paths]
    if len(paths) < 2:
        raise DifflabError(f"averaging needs two or more checkpoints, got {len(paths)}")
    if Path(out).resolve() in {path.resolve() for path in paths}:
        raise DifflabError(f"--out {out} is one of the checkpoints averaged; write the average to a new file")
    weights = member_weights(len(paths), weights)
    loaded = [load_denoiser(path) for path in paths]  # each member's EMA weights (raw where it has none)
    checkpoints = [checkpoint for _, checkpoint in loaded]
    check_members(paths, checkpoints)
    config = checkpoints[0].config
    if config.consistency_levels is not None:
        config = replace(config, consistency_levels=replace(config.consistency_levels, renoise=()))
    net = loaded[0][0].net
    net.load_state_dict(weighted_average([denoiser.net.state_dict() for denoiser, _ in loaded], weights))
    members = [{"path": str(path.resolve()), "sha256": sha256_file(path), "step": c.step, "weight": w}
               for path, c, w in zip(paths, checkpoints, weights)]
    save_checkpoint(out, config, max(c.step for c in checkpoints), model=net, refs=checkpoints[0].refs,
                    extra_metadata={"averaged_from": json.dumps(members)})
    return weights
