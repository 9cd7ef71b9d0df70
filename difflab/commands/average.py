"""`difflab average`: one denoiser whose weights are the (weighted) average of several checkpoints' EMA weights."""

from __future__ import annotations

import argparse

from difflab.train.average import average_checkpoints


def weight_list(text: str) -> list[float]:
    try:
        return [float(w) for w in text.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(f"--weights takes numbers separated by commas, got {text!r}") from None


def register(subparsers) -> None:
    p = subparsers.add_parser("average", help="average the weights of checkpoints of one network (a model soup)",
                              description=__doc__ + "\n\nThe members must share their network, schedule, "
                              "prediction, preconditioning and frozen components (e.g. runs annealed or fine-tuned "
                              "from one checkpoint); their training recipes may differ.")
    p.add_argument("checkpoints", nargs="+", help="two or more checkpoints (.safetensors)")
    p.add_argument("--out", required=True, help="the .safetensors file to write")
    p.add_argument("--weights", type=weight_list, help="W1,W2,...: one weight >= 0 per checkpoint, normalised to sum "
                                                       "1 (default: uniform)")
    p.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    weights = average_checkpoints(args.checkpoints, args.out, args.weights)
    shares = ", ".join(f"{w:.3g} {path}" for w, path in zip(weights, args.checkpoints))
    print(f"wrote {args.out}: {shares}")
    return 0
