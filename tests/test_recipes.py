"""The bundled recipes (difflab/configs/*.json) load, and the default one takes the budgets users give it."""

import importlib.util
from dataclasses import replace
from pathlib import Path

import pytest

from difflab.cli import build_parser
from difflab.commands import BUNDLED_CONDITIONAL_MODEL
from difflab.commands.train import training_config
from difflab.train.checkpoint import load_checkpoint
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
    assert baseline.train.precision == "fp32"  # not the default recipe's "auto": the machine does not pick it
    assert (edm.precond.kind, edm.train.loss, edm.train.warmup) == ("edm", "edm", 50)
    assert bench.speed_key(baseline) == bench.speed_key(edm)  # same network and batch: same speed, same steps
    assert bench.speed_key(baseline) != bench.speed_key(bench.variant_config("batch32", 306))
    depth1, bf16 = bench.variant_config("depth1", 306), bench.variant_config("bf16", 306)
    assert bf16.train.precision == "bf16" and replace(bf16, train=replace(bf16.train, precision="fp32")) == depth1
    assert bench.speed_key(bf16) != bench.speed_key(depth1)  # another precision, another speed
    assert '"precision"' not in bench.speed_key(depth1)  # the report's float32 speeds keep their keys


def test_recipe_bench_scales_a_new_networks_speed_by_the_baseline_probed_beside_it(monkeypatch, tmp_path):
    bench = _bench_recipe()
    base, deep = (bench.speed_key(bench.variant_config(name, 1)) for name in ("baseline", "depth1"))
    assert bench.variant_config("depth1", 1).network.num_res_blocks == 1
    assert bench.variant_config("width48", 1).network.channels == 48
    probed = {("baseline", "depth1"): {base: 50.0, deep: 75.0}, ("depth1",): {deep: 75.0}}
    monkeypatch.setattr(bench, "probe_speeds", lambda names, *args: probed[tuple(names)])
    assert bench.anchored_speeds(["depth1"], {base: 32.0}, 1, 1, tmp_path) == {deep: 48.0}  # the machine was 50/32 faster
    assert bench.anchored_speeds(["depth1"], {}, 1, 1, tmp_path) == {deep: 75.0}  # the first probe is the anchor


def test_fine_tuning_without_a_config_keeps_the_checkpoints_network():
    """The default recipe's network (1 res block a level, bench/recipe.py) differs from the bundled conditional
    model's (2): `difflab train --init CKPT` takes the checkpoint's network, less its condition inputs (--cond adds
    those); with --config, the config's network."""
    conditional = load_checkpoint(BUNDLED_CONDITIONAL_MODEL).config.network
    default = load_config(ROOT / "difflab" / "configs" / "fashion_mnist.json").network
    assert (default.num_res_blocks, conditional.num_res_blocks) == (1, 2)
    for cond in ([], ["--cond", "class"]):
        args = build_parser().parse_args(["train", "--init", str(BUNDLED_CONDITIONAL_MODEL), *cond])
        assert training_config(args).network == replace(conditional, num_classes=None, text_dim=None)
    edm = ROOT / "difflab" / "configs" / "fashion_mnist_edm.json"
    args = build_parser().parse_args(["train", "--init", str(BUNDLED_CONDITIONAL_MODEL), "--config", str(edm)])
    assert training_config(args).network == load_config(edm).network


def test_recipe_bench_runs_another_training_seed_apart_from_the_first():
    bench = _bench_recipe()
    first, other = bench.variant_config("depth1", 882), bench.variant_config("depth1", 882, seed=1)
    assert first.train.seed == 0 and other.train.seed == 1
    assert replace(other, train=replace(other.train, seed=0)) == first  # the seed is the only change
    row = {"budget": 20.0, "changed": "", "images_per_s": 47.0, "steps": 882}
    report = {"results": {
        "baseline@20": {**row, "variant": "baseline", "fd": 40.0},
        "baseline@20_seed1": {**row, "variant": "baseline", "seed": 1, "fd": 50.0},
        "depth1@20_seed1": {**row, "variant": "depth1", "seed": 1, "fd": 15.0}}}
    table = bench.table(report)
    assert "| 20 | depth1 (seed 1) |" in table and table.rstrip().endswith("| 15.00 | 0.30 |")  # seed 1's baseline


def test_recipe_bench_scores_the_same_runs_at_another_n_apart(tmp_path):
    bench = _bench_recipe()
    report = {"n": 1000, "results": {}}
    assert bench.result_key("depth1", 20.0, None, 1000, report) == "depth1@20"
    assert bench.result_key("depth1", 20.0, 1, 5000, report) == "depth1@20_seed1_n5000"
    checkpoint = tmp_path / "checkpoint.safetensors"
    row = {"budget": 20.0, "changed": "", "images_per_s": 47.0, "steps": 882, "checkpoint": str(checkpoint)}
    report["results"] = {
        "baseline@20": {**row, "variant": "baseline", "fd": 40.0},
        "depth1@20": {**row, "variant": "depth1", "fd": 14.0},
        "baseline@20_n5000": {**row, "variant": "baseline", "n": 5000, "fd": 20.0},
        "depth1@20_n5000": {**row, "variant": "depth1", "n": 5000, "fd": 5.0}}
    table = bench.table(report)
    assert "| 20 | depth1 (n = 5,000) |" in table and table.rstrip().endswith("| 5.00 | 0.25 |")  # n = 5,000's baseline
    assert "| 14.00 | 0.35 |" in table
    assert bench.trained("depth1", 20.0, None, report) is None  # its checkpoint is gone: train again
    checkpoint.write_bytes(b"")
    assert bench.trained("depth1", 20.0, None, report)["variant"] == "depth1"
    assert bench.trained("depth1", 20.0, 1, report) is None
