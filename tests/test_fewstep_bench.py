"""bench/fewstep.py: a run into an existing report keeps the rows it did not measure again."""

import importlib.util
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_a_curve_measured_in_parts_keeps_every_nfe_and_the_newest_row_of_each():
    spec = importlib.util.spec_from_file_location("bench_fewstep", ROOT / "bench" / "fewstep.py")
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    old = {"cd": [{"nfe": 1, "fd": 6.1}, {"nfe": 2, "fd": 4.9}], "pd": [{"nfe": 4, "fd": 8.7}]}
    new = {"cd": [{"nfe": 8, "fd": 4.0}, {"nfe": 2, "fd": 4.7}], "soup": [{"nfe": 1, "fd": 5.8}]}
    assert bench.merge_curves(old, new) == {
        "cd": [{"nfe": 1, "fd": 6.1}, {"nfe": 2, "fd": 4.7}, {"nfe": 8, "fd": 4.0}],
        "pd": [{"nfe": 4, "fd": 8.7}], "soup": [{"nfe": 1, "fd": 5.8}]}
