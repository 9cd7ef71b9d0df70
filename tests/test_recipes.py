"""The bundled recipes (difflab/configs/*.json) load, and the default one takes the budgets users give it."""

import importlib.util
from pathlib import Path

import pytest

from difflab.cli import build_parser
from difflab.commands.train import training_config
from difflab.train.config import load_config

ROOT = Path(__file__).resolve().parent.parent
CONFIGS = sorted((ROOT / "difflab" / "configs").glob("*.json"))


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.name)
def test_every_bundled_config_loads(path):
    load_config(path)


@pytest.mark.parametrize("budget", [["--minutes", "20"], ["--steps", "900"]])
def test_default_recipe_takes_a_wall_clock_or_step_budget(budget):
    # `difflab train --minutes M` and `difflab demo --minutes M` drop the recipe's steps, so its lr schedule must not
    # need them (lr_decay cosine does: bench/recipe.py measures it, the default keeps a constant lr)
    config = training_config(build_parser().parse_args(["train", *budget]))
    assert (config.train.minutes, config.train.steps) == ((20.0, None) if budget[0] == "--minutes" else (None, 900))


def _bench_recipe():
    spec = importlib.util.spec_from_file_location("bench_recipe", ROOT / "bench" / "recipe.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_recipe_bench_pins_its_baseline_and_changes_one_thing():
    bench = _bench_recipe()
    baseline, edm = bench.variant_config("baseline", 306), bench.variant_config("edm", 306)
    assert (baseline.train.lr, baseline.train.warmup, baseline.train.steps) == (5e-4, 500, 306)  # today's, pinned
    assert (edm.precond.kind, edm.train.loss, edm.train.warmup) == ("edm", "edm", 50)
    assert bench.speed_key(baseline) == bench.speed_key(edm)  # same network and batch: same speed, same steps
    assert bench.speed_key(baseline) != bench.speed_key(bench.variant_config("batch32", 306))
