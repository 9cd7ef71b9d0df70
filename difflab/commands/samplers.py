"""`difflab samplers`: list the registered samplers."""

from __future__ import annotations

import argparse

from difflab.pipelines.samplers import SIGMA_GRIDS, default_grid
from difflab.samplers import SAMPLERS


def register(subparsers) -> None:
    p = subparsers.add_parser("samplers", help="list samplers with order, stochasticity, NFE per step and default grid")
    p.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    print(f"{'name':<22} {'order':>5} {'stochastic':>10} {'NFE/step':>8} {'grid':>9}  description")
    for info in sorted(SAMPLERS.values(), key=lambda i: i.name):
        print(f"{info.name:<22} {info.order:>5} {'yes' if info.stochastic else 'no':>10} {info.nfe_per_step:>8} "
              f"{default_grid(info.name):>9}  {info.description}")
    print(f"grid: the default on a discrete (VP) schedule, chosen by FD in bench/sampler_defaults.py (trailing where "
          f"unmeasured); on a model with continuous levels (EDM) a grid other than {' or '.join(SIGMA_GRIDS)} runs "
          f"as karras")
    return 0
