"""`difflab train-classifier`: train a noise-aware classifier p(y | x_t, t) for classifier guidance.

It is trained on the noise schedule of the diffusion model it will guide (--for-model, default the bundled
Fashion-MNIST model) and used with `difflab sample MODEL --classifier OUT/classifier.safetensors --class K`.
"""

from __future__ import annotations

import argparse
from dataclasses import replace

from difflab.commands import BUNDLED_MODEL, positive_float, positive_int, set_threads
from difflab.errors import DifflabError
from difflab.nets.classifier import ClassifierConfig
from difflab.train.checkpoint import load_checkpoint
from difflab.train.classifier import train_classifier
from difflab.train.classifier_config import ClassifierTrainConfig


def register(subparsers) -> None:
    p = subparsers.add_parser("train-classifier", help="train a noise-aware classifier for classifier guidance",
                              description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--for-model", help="diffusion checkpoint whose noise schedule to train for (default: the "
                                       "bundled model)")
    p.add_argument("--data", help="fashion-mnist (default) or a DIR of images with one subfolder per class")
    p.add_argument("--data-root", help="folder holding the Fashion-MNIST IDX files")
    p.add_argument("--steps", type=positive_int("--steps"),
                   help=f"optimizer steps (default {ClassifierTrainConfig.steps})")
    p.add_argument("--batch", type=positive_int("--batch"), help=f"default {ClassifierTrainConfig.batch}")
    p.add_argument("--lr", type=positive_float("--lr"),
                   help=f"peak learning rate (default {ClassifierTrainConfig.lr:g})")
    p.add_argument("--seed", type=int)
    p.add_argument("--eval-n", type=positive_int("--eval-n"),
                   help=f"test images per noise level for the final accuracy (default {ClassifierTrainConfig.eval_n})")
    p.add_argument("--channels", type=positive_int("--channels"),
                   help=f"base width of the network (default {ClassifierConfig().trunk.channels})")
    p.add_argument("--pool", choices=["attention", "mean"], help="how features are pooled (default attention)")
    p.add_argument("--out", default="runs/classifier", help="output folder (classifier.safetensors)")
    p.add_argument("--resume", action="store_true",
                   help="continue an interrupted run exactly from OUT/classifier.safetensors (with its own settings)")
    p.add_argument("--threads", type=int, help="CPU threads for torch")
    p.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    set_threads(args.threads)
    model = load_checkpoint(args.for_model or BUNDLED_MODEL).config
    if model.precond.kind != "vp":
        raise DifflabError("--for-model: a noise-aware classifier is trained for a discrete VP schedule, and this "
                           f"model's preconditioning is {model.precond.kind}")
    schedule = model.schedule
    train = {k: v for k, v in {"data": args.data, "data_root": args.data_root, "steps": args.steps, "batch": args.batch,
                               "lr": args.lr, "seed": args.seed, "eval_n": args.eval_n}.items() if v is not None}
    network = ClassifierConfig()
    if args.channels is not None:
        network = replace(network, trunk=replace(network.trunk, channels=args.channels))
    if args.pool is not None:
        network = replace(network, pool=args.pool)
    result = train_classifier(ClassifierTrainConfig(**train), schedule, args.out, network=network, resume=args.resume)
    print(f"trained to step {result.step} in {result.seconds / 60:.1f} min; checkpoint: {result.checkpoint}")
    print("test accuracy by timestep: " + ", ".join(f"t={t}: {a:.3f}" for t, a in result.accuracy.items()))
    return 0
