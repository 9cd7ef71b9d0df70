"""`difflab train-consistency`: a consistency model from data alone (consistency training, no teacher).

  difflab train-consistency --config configs/fashion_mnist_edm.json --steps 2000            # CT, Song et al. 2023
  difflab train-consistency --config configs/fashion_mnist_edm.json --steps 2000 --improved # iCT, Song & Dhariwal 2023
  difflab train --objective consistency --steps 2000                                        # the same as the first

The config's network and preconditioning (vp or edm) are wrapped in the consistency scalings; sample the result with
`difflab sample OUT/student.safetensors --sampler consistency --steps 1` (or 2 with re-noising).
"""

from __future__ import annotations

import argparse

from difflab.commands import set_threads
from difflab.commands.distill import (
    add_budget_arguments,
    add_consistency_arguments,
    budget,
    recipe,
)
from difflab.commands.train import RECIPES
from difflab.distill.consistency import IMPROVED
from difflab.distill.run import train_consistency
from difflab.train.config import load_config


def register(subparsers) -> None:
    p = subparsers.add_parser("train-consistency", help="consistency training from data (CT / improved CT)",
                              description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", default=str(RECIPES / "fashion_mnist_edm.json"),
                   help="the model's config (network, precond; default: the bundled configs/fashion_mnist_edm.json)")
    p.add_argument("--improved", action="store_true", help="iCT: no EMA target, log-normal levels, N(k) doubling, "
                                                           "lambda = 1 / (t_n+1 - t_n), pseudo-Huber")
    p.add_argument("--out", default="runs/consistency_training", help="output folder (student.safetensors)")
    add_consistency_arguments(p)
    add_budget_arguments(p)
    p.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    set_threads(args.threads)
    base = IMPROVED if args.improved else {"curriculum": "ct"}
    path = train_consistency(load_config(args.config), args.out, recipe(args, **base), budget(args),
                             resume=args.resume)
    print(f"consistency model {path}; sample with `difflab sample {path} --sampler consistency --steps 1`")
    return 0
