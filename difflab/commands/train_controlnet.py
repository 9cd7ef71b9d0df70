"""`difflab train-controlnet`: train a ControlNet for a frozen base model on annotator maps of its data.

The base (default: the bundled class- and text-conditional model) is referred to by path and sha256, never copied;
the result, OUT/controlnet.safetensors, is used with `difflab sample --control IMAGE --control-model FILE` and by
`difflab serve --controlnet-dir DIR`.
"""

from __future__ import annotations

import argparse

from difflab.annotators import CONTROL_TYPES
from difflab.commands import (
    BUNDLED_CONDITIONAL_MODEL,
    positive_float,
    positive_int,
    set_threads,
)
from difflab.train.controlnet import ControlNetTrainConfig, train_controlnet


def register(subparsers) -> None:
    p = subparsers.add_parser("train-controlnet", help="train a ControlNet (spatial control) for a frozen base model",
                              description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--base", help="the base denoiser checkpoint (default: the bundled conditional model)")
    p.add_argument("--control", required=True, choices=CONTROL_TYPES, help="the annotator whose maps control it")
    p.add_argument("--data", help="fashion-mnist (default) or a DIR of images")
    p.add_argument("--data-root", help="folder holding the Fashion-MNIST IDX files")
    p.add_argument("--steps", type=positive_int("--steps"), help=f"default {ControlNetTrainConfig.steps}")
    p.add_argument("--minutes", type=positive_float("--minutes"), help="wall-clock budget")
    p.add_argument("--batch", type=positive_int("--batch"), help=f"default {ControlNetTrainConfig.batch}")
    p.add_argument("--lr", type=positive_float("--lr"), help=f"default {ControlNetTrainConfig.lr:g}")
    p.add_argument("--p-uncond", type=float, help=f"probability of the null prompt (default "
                                                  f"{ControlNetTrainConfig.p_uncond})")
    p.add_argument("--checkpoint-every", type=positive_int("--checkpoint-every"))
    p.add_argument("--seed", type=int)
    p.add_argument("--device", choices=["cpu", "cuda", "auto"])
    p.add_argument("--out", default="runs/controlnet", help="output folder (controlnet.safetensors)")
    p.add_argument("--resume", action="store_true", help="continue an interrupted run exactly (its own settings)")
    p.add_argument("--threads", type=int, help="CPU threads for torch")
    p.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    set_threads(args.threads)
    fields = ("data", "data_root", "steps", "minutes", "batch", "lr", "p_uncond", "checkpoint_every", "seed", "device")
    given = {name: getattr(args, name) for name in fields if getattr(args, name) is not None}
    if "minutes" in given and "steps" not in given:
        given["steps"] = None
    result = train_controlnet(args.base or BUNDLED_CONDITIONAL_MODEL, args.control, ControlNetTrainConfig(**given),
                              args.out, resume=args.resume)
    print(f"trained to step {result.step} in {result.seconds / 60:.1f} min; ControlNet: {result.checkpoint}")
    return 0
