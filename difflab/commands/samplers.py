"""`difflab samplers`: list the registered samplers."""

from __future__ import annotations

import argparse

from difflab.samplers import SAMPLERS


def register(subparsers) -> None:
    p = subparsers.add_parser("samplers", help="list samplers with order, stochasticity and NFE per step")
    p.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    print(f"{'name':<22} {'order':>5} {'stochastic':>10} {'NFE/step':>8}  description")
    for info in sorted(SAMPLERS.values(), key=lambda i: i.name):
        print(f"{info.name:<22} {info.order:>5} {'yes' if info.stochastic else 'no':>10} {info.nfe_per_step:>8}  "
              f"{info.description}")
    return 0
