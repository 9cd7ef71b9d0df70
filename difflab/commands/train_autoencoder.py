"""`difflab train-autoencoder`: train a KL autoencoder whose latent space a diffusion model can then be trained in
(`difflab train --autoencoder OUT/autoencoder.safetensors`). The latent scale factor is measured on the training set
when training ends and stored in the component."""

from __future__ import annotations

import argparse

from difflab.commands import positive_float, positive_int, set_threads
from difflab.nets.autoencoder import FACTORS, AutoencoderConfig
from difflab.train.autoencoder import train_autoencoder
from difflab.train.autoencoder_config import RECONSTRUCTIONS, AutoencoderTrainConfig

DEFAULTS = AutoencoderTrainConfig


def register(subparsers) -> None:
    p = subparsers.add_parser("train-autoencoder", help="train a KL autoencoder for latent diffusion",
                              description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", help="fashion-mnist (default) or a DIR of images")
    p.add_argument("--data-root", help="folder holding the Fashion-MNIST IDX files")
    p.add_argument("--factor", type=int, choices=FACTORS,
                   help=f"downsampling factor f (default {AutoencoderConfig.factor})")
    p.add_argument("--latent-channels", type=positive_int("--latent-channels"),
                   help=f"channels of the latent (default {AutoencoderConfig.latent_channels})")
    p.add_argument("--channels", type=positive_int("--channels"),
                   help=f"width at full resolution (default {AutoencoderConfig.channels})")
    p.add_argument("--res-blocks", type=positive_int("--res-blocks"),
                   help=f"residual blocks per level (default {AutoencoderConfig.num_res_blocks})")
    p.add_argument("--reconstruction", choices=RECONSTRUCTIONS, help=f"default {DEFAULTS.reconstruction}")
    p.add_argument("--beta", type=float, help=f"weight of the KL term (default {DEFAULTS.beta:g})")
    p.add_argument("--perceptual", type=float, help="weight of the distance in the feature net's features "
                                                    f"(default {DEFAULTS.perceptual:g}: none)")
    p.add_argument("--steps", type=positive_int("--steps"), help=f"optimizer steps (default {DEFAULTS.steps})")
    p.add_argument("--batch", type=positive_int("--batch"), help=f"default {DEFAULTS.batch}")
    p.add_argument("--lr", type=positive_float("--lr"), help=f"peak learning rate (default {DEFAULTS.lr:g})")
    p.add_argument("--seed", type=int)
    p.add_argument("--scale-n", type=positive_int("--scale-n"),
                   help="training images the latent scale factor is measured on (default all)")
    p.add_argument("--out", default="runs/autoencoder", help="output folder (autoencoder.safetensors)")
    p.add_argument("--resume", action="store_true",
                   help="continue an interrupted run exactly from OUT/autoencoder.safetensors (with its own settings; "
                        "--steps, if given, replaces its budget)")
    p.add_argument("--threads", type=int, help="CPU threads for torch")
    p.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    set_threads(args.threads)
    train = {k: v for k, v in {"data": args.data, "data_root": args.data_root, "steps": args.steps,
                               "batch": args.batch, "lr": args.lr, "seed": args.seed,
                               "reconstruction": args.reconstruction, "beta": args.beta,
                               "perceptual": args.perceptual, "scale_n": args.scale_n}.items() if v is not None}
    network = {k: v for k, v in {"factor": args.factor, "latent_channels": args.latent_channels,
                                 "channels": args.channels, "num_res_blocks": args.res_blocks}.items() if v is not None}
    result = train_autoencoder(AutoencoderTrainConfig(**train), args.out, network=AutoencoderConfig(**network),
                               resume=args.resume, steps=args.steps)
    print(f"trained to step {result.step} in {result.seconds / 60:.1f} min; latent scale factor "
          f"{result.scale_factor:.5f}; checkpoint: {result.checkpoint}")
    return 0
