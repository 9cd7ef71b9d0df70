"""Benches that cache samples by name (bench/cascade.py, bench/refiner.py) reuse them only for the models and
settings that drew them, and a bench given a missing model ends in one line, as the CLI does."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from tiny_models import TINY_UNET, write_random_model

from difflab.errors import DifflabError
from difflab.eval.provenance import claim_samples

ROOT = Path(__file__).resolve().parents[1]
CONFIG = {"network": TINY_UNET, "schedule": {"kind": "linear", "timesteps": 100}, "data_shape": [1, 16, 16]}


def test_a_sample_cache_refuses_another_model_in_a_role_or_another_setting(tmp_path):
    a = write_random_model(tmp_path / "a.safetensors", CONFIG, seed=0)
    b = write_random_model(tmp_path / "b.safetensors", CONFIG, seed=1)
    cache = tmp_path / "cache"
    claim_samples(cache, {"base": a}, {"n": 10, "steps": 20}, "--out")
    claim_samples(cache, {"base": a, "refiner": b}, {"n": 10}, "--out")  # a new role joins; unnamed settings stay
    ledger = json.loads((cache / "models.json").read_text())
    assert set(ledger["models"]) == {"base", "refiner"} and ledger["settings"] == {"n": 10, "steps": 20}
    with pytest.raises(DifflabError, match=r"^base: .* holds results of another model .*give another --out$"):
        claim_samples(cache, {"base": b}, {"n": 10}, "--out")
    b.write_bytes(a.read_bytes())  # the same path with other bytes: refused by its sha256
    with pytest.raises(DifflabError, match="refiner: .* holds results of another model"):
        claim_samples(cache, {"refiner": b}, {}, "--out")
    with pytest.raises(DifflabError, match="holds samples drawn with steps 20, not 50: give another --out"):
        claim_samples(cache, {"base": a}, {"steps": 50}, "--out")
    assert json.loads((cache / "models.json").read_text()) == ledger  # a refused run records nothing


@pytest.mark.parametrize("script, args", [("refiner.py", ["--refiner"]), ("sampler_defaults.py", ["--model"])])
def test_a_bench_given_a_missing_model_says_so_in_one_line(tmp_path, script, args):
    missing = tmp_path / "missing.safetensors"
    result = subprocess.run([sys.executable, str(ROOT / "bench" / script), *args, str(missing), "--out",
                             str(tmp_path / "out")], capture_output=True, text=True)
    assert result.returncode == 2
    assert result.stderr.splitlines() == [f"{script}: error: model {missing} not found"]
