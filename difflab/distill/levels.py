"""A consistency model's re-noising levels for multistep sampling, chosen one at a time, each by a ternary search by FD
over the levels f was trained at, the earlier ones kept. This is what openai/consistency_models'
scripts/ternary_search.py does for Song et al. 2023's multistep samples: a search over the training grid's indices
between the levels already fixed (its --begin and --end), on the same seeds for every probe. f is fitted only at
those levels, and between them it is measurably worse (README, "Few-step sampling")."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import replace
from pathlib import Path

from difflab.distill.consistency import level_grid
from difflab.distill.student import ConsistencyLevels
from difflab.errors import DifflabError
from difflab.eval.report import frechet_distance_of_images
from difflab.images import to_uint8
from difflab.model import load_model
from difflab.pipelines.generate import generate
from difflab.train.checkpoint import rewrite_config

Probe = tuple[tuple[float, ...], float]  # the sampling levels (the top one first) and their score


def ternary_search(score: Callable[[int], float], lo: int, hi: int) -> int:
    """The argmin over the integers lo..hi of a unimodal score, scoring each point at most once."""
    seen: dict[int, float] = {}

    def at(i: int) -> float:
        if i not in seen:
            seen[i] = score(i)
        return seen[i]

    while hi - lo > 2:
        third = (hi - lo) // 3
        left, right = lo + third, hi - third
        if at(left) <= at(right):  # unimodal: the minimum is not right of `right`
            hi = right - 1
        else:  # ... nor left of `left`
            lo = left + 1
    return min(range(lo, hi + 1), key=at)


def choose_renoise(trained: Sequence[float], steps: int,
                   score: Callable[[tuple[float, ...]], float]) -> tuple[tuple[float, ...], list[Probe]]:
    """The steps - 1 re-noising levels (descending) of multistep sampling from `trained` (the training levels,
    descending), and every probe scored: level k is the training level below level k - 1 that minimises
    score((sigma_max, level 1, ..., level k)) with the earlier levels kept. sigma_min is never a candidate, where
    f(x, sigma_min) = x makes a step that changes nothing."""
    candidates = tuple(trained[1:-1])
    if steps < 2 or steps - 1 > len(candidates):
        raise DifflabError(f"--steps must be 2 .. {len(candidates) + 1} for a model trained at {len(trained)} levels "
                           f"(1 step has nothing to choose), got {steps}")
    probes: dict[tuple[float, ...], float] = {}
    chosen: tuple[float, ...] = ()
    for k in range(steps - 1):
        def probe(i: int) -> float:
            levels = (trained[0],) + chosen + (candidates[i],)
            probes[levels] = score(levels)
            return probes[levels]

        first = 0 if not chosen else candidates.index(chosen[-1]) + 1
        last = len(candidates) - (steps - 2 - k) - 1  # leave a level below for each later step
        chosen += (candidates[ternary_search(probe, first, last)],)
    return chosen, list(probes.items())


def training_levels(model, levels: int | None = None, rho: float = 7.0) -> tuple[float, ...]:
    """The levels a consistency model was trained at, descending: recorded in its config, or for a model trained
    before they were recorded, its `levels`-level Karras grid between sigma_min and sigma_max."""
    config = model.checkpoint.config
    if config.precond.kind != "consistency":
        raise DifflabError(f"{model.files['denoiser']} is not a consistency model (precond {config.precond.kind!r})")
    recorded = config.consistency_levels
    if recorded is not None and levels is not None:
        raise DifflabError("--levels: this model records the levels it was trained at; leave --levels out")
    if recorded is not None:
        return recorded.trained
    if levels is None:
        raise DifflabError("this model does not record the levels it was trained at (it was trained before they were "
                           "recorded): give --levels N, its Karras grid's N (18 for difflab distill consistency)")
    grid = level_grid(config.precond.sigma_min, model.denoiser.sigma_max, levels, rho)
    return tuple(grid.flip(0).tolist())


def tune_levels(path: str | Path, steps: int, *, n: int = 1000, seed: int = 0, batch: int = 250,
                levels: int | None = None, report: Callable[[tuple[float, ...], float], None] | None = None,
                ) -> tuple[ConsistencyLevels, list[Probe]]:
    """Choose the consistency model at `path` its re-noising levels for up to `steps` steps by the FD of n samples
    (seeds seed ..) against the Fashion-MNIST test set, record them in its config, and return them with the probes
    (each reported as it is scored). Sampling it with the consistency sampler on no other grid then uses them."""
    model = load_model(path)
    if model.latent is not None or model.image_shape != (1, 28, 28):
        raise DifflabError(f"{path}: levels are chosen by FD against Fashion-MNIST, which needs a 1x28x28 pixel model; "
                           f"this one samples {list(model.image_shape)}")
    trained = training_levels(model, levels)

    def score(sigmas: tuple[float, ...]) -> float:
        x = generate(model.denoiser, model.sample_shape, n, sampler="consistency", steps=len(sigmas), levels=sigmas,
                     seed=seed, batch=batch)
        fd = frechet_distance_of_images(to_uint8(x))
        if report is not None:
            report(sigmas, fd)
        return fd

    renoise, probes = choose_renoise(trained, steps, score)
    chosen = ConsistencyLevels(trained, renoise)
    rewrite_config(model.files["denoiser"], replace(model.checkpoint.config, consistency_levels=chosen))
    return chosen, probes
