"""`difflab export`: an inference-only copy of a training checkpoint (EMA weights and config, no optimizer)."""

from __future__ import annotations

import argparse
from pathlib import Path

from difflab.train.checkpoint import export_weights


def register(subparsers) -> None:
    p = subparsers.add_parser("export", help="write an inference-only checkpoint (EMA weights + config)",
                              description=__doc__)
    p.add_argument("checkpoint", help="a training checkpoint (.safetensors)")
    p.add_argument("out", help="the .safetensors file to write")
    p.add_argument("--raw", action="store_true", help="export the raw weights instead of the EMA weights")
    p.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    export_weights(args.checkpoint, args.out, use_ema=not args.raw)
    print(f"wrote {args.out} ({Path(args.out).stat().st_size / 1e6:.1f} MB)")
    return 0
