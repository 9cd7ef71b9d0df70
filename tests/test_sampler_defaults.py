"""Each sampler's default grid (SAMPLER_GRIDS, measured by bench/sampler_defaults.py): listed by `difflab samplers`,
used when no grid is named, overridden by an explicit grid, and a sigma grid on a model with continuous levels."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from tiny_models import TINY_UNET, write_random_model

from difflab.cli import main
from difflab.denoiser import Denoiser, EDMConfig, EDMPrecond
from difflab.eval.provenance import model_record, refusal
from difflab.pipelines.dialect import CLI
from difflab.pipelines.generate import generate
from difflab.pipelines.request import Request, plan_request
from difflab.pipelines.samplers import (
    DEFAULT_GRID,
    SAMPLER_GRIDS,
    SIGMA_GRIDS,
    default_grid,
    resolve_sampler,
)
from difflab.samplers import SAMPLERS
from difflab.train.checkpoint import load_denoiser, sha256_file

ROOT = Path(__file__).resolve().parents[1]
TABLE = ROOT / "docs" / "sampler_defaults.json"  # bench/sampler_defaults.py's cells, of the bundled model
PREVIOUS = ROOT / "docs" / "sampler_defaults_previous_model.json"  # of the previous one (tests/golden/)
# a sampler whose measured default is not the fallback, so that using the default shows in the samples
MOVED = next(name for name, grid in SAMPLER_GRIDS.items() if grid != DEFAULT_GRID)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    path = write_random_model(tmp_path_factory.mktemp("defaults") / "model.safetensors",
                              {"network": TINY_UNET, "schedule": {"kind": "linear", "timesteps": 100},
                               "data_shape": [1, 16, 16]})
    return path, *load_denoiser(path)


def test_every_default_is_a_registered_sampler_on_a_grid_without_sections():
    assert set(SAMPLER_GRIDS) <= set(SAMPLERS)
    assert all(grid != "respaced" for grid in SAMPLER_GRIDS.values())


@pytest.fixture(scope="module")
def bench():
    spec = importlib.util.spec_from_file_location("bench_sampler_defaults", ROOT / "bench" / "sampler_defaults.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_each_default_is_what_the_table_at_n_2000_and_10_steps_chose(bench):
    """A sampler's default is its grid of lowest FD in the shipped table, or trailing where that one won by too
    little (the paired-bootstrap rule), and never worse than trailing: no default changes without a measurement."""
    cells = [c for c in json.loads(TABLE.read_text())["cells"]
             if c["n"] == 2000 and c["steps"] == 10 and c["seed"] == 0]
    for sampler in bench.SAMPLER_NAMES:  # the bench's samplers, each on each of its grids
        fd = {c["grid"]: c["fd"] for c in cells if c["sampler"] == sampler}
        assert set(fd) == set(bench.GRID_NAMES), sampler
        own = SAMPLER_GRIDS[sampler]
        assert own in (min(fd, key=fd.get), DEFAULT_GRID), sampler
        assert fd[own] <= fd[DEFAULT_GRID], sampler


def test_the_benches_extend_a_report_only_with_the_model_that_measured_it(tiny, tmp_path):
    """The shipped tables are of the bundled model and of the previous one (tests/golden/): a run of another model,
    even one at the same path, refuses to add its cells, in one line; so does bench/fewstep.py with another
    teacher."""
    for path in (TABLE, PREVIOUS):
        report = json.loads(path.read_text())
        assert report["model_sha256"] == sha256_file(ROOT / report["model"])
        assert refusal(path, report, model_record(ROOT / report["model"]), "--out") is None
        problem = refusal(path, report, model_record(tiny[0]), "--out")
        assert "holds results of another model" in problem and problem.endswith("give another --out")
    fewstep = json.loads((ROOT / "docs" / "fewstep.json").read_text())["quality"]
    assert fewstep["model_sha256"] == report["model_sha256"]  # its students were distilled from the previous model
    for bench, flag in (("sampler_defaults.py", "--out"), ("fewstep.py", "--json")):
        copy = tmp_path / bench.replace(".py", ".json")
        copy.write_text(json.dumps({"cells": [], "quality": fewstep, **report}))
        model_flag = "--model" if bench == "sampler_defaults.py" else "--teacher"
        result = subprocess.run([sys.executable, str(ROOT / "bench" / bench), model_flag, str(tiny[0]), flag,
                                 str(copy), "--n", "10", "--threads", "1"], capture_output=True, text=True)
        assert result.returncode == 1 and result.stderr.strip().endswith(f"give another {flag}"), result.stderr


def test_samplers_command_lists_each_default(capsys):
    assert main(["samplers"]) == 0
    rows = {line.split()[0]: line.split() for line in capsys.readouterr().out.splitlines()[1:] if line.split()}
    for name in SAMPLERS:
        assert rows[name][4] == default_grid(name), name
    assert rows[MOVED][4] == SAMPLER_GRIDS[MOVED]


def test_a_sampler_named_without_a_grid_runs_on_its_default(tiny):
    _, denoiser, checkpoint = tiny
    for name in SAMPLERS:
        assert resolve_sampler(name, None, CLI, denoiser.default_grid).grid == SAMPLER_GRIDS.get(name, DEFAULT_GRID)
    plan = plan_request(Request(sampler=MOVED, steps=4), denoiser, checkpoint.config)
    assert plan.sampler.grid == SAMPLER_GRIDS[MOVED]
    run = {"sampler": MOVED, "steps": 4, "seed": 3}
    own = generate(denoiser, (1, 16, 16), 2, **run)
    assert torch.equal(own, generate(denoiser, (1, 16, 16), 2, grid=SAMPLER_GRIDS[MOVED], **run))
    assert not torch.equal(own, generate(denoiser, (1, 16, 16), 2, grid=DEFAULT_GRID, **run))


def test_an_explicit_grid_wins(tiny, tmp_path, capsys):
    path = tiny[0]
    images = {}
    for grid in (None, SAMPLER_GRIDS[MOVED], DEFAULT_GRID):
        out = tmp_path / f"{grid}.npz"
        assert main(["sample", str(path), "--sampler", MOVED, "--steps", "4", "--n", "2", "--threads", "1",
                     "--out", str(out), *([] if grid is None else ["--grid", grid])]) == 0
        images[grid] = np.load(out)["images"]
    capsys.readouterr()
    assert np.array_equal(images[None], images[SAMPLER_GRIDS[MOVED]])
    assert not np.array_equal(images[None], images[DEFAULT_GRID])
    assert resolve_sampler(MOVED, "linspace", CLI).grid == "linspace"


def test_a_model_with_continuous_levels_gets_a_sigma_grid():
    edm = Denoiser(torch.nn.Identity(), EDMPrecond(EDMConfig()))
    assert edm.default_grid == "karras"
    for name in SAMPLERS:
        grid = resolve_sampler(name, None, CLI, edm.default_grid).grid
        own = SAMPLER_GRIDS.get(name, DEFAULT_GRID)
        assert grid == (own if own in SIGMA_GRIDS else "karras"), name
