"""`difflab train`: train a model from a config, with command-line overrides of the recipe."""

from __future__ import annotations

import argparse
from dataclasses import replace
from pathlib import Path

from difflab.commands import positive_float, positive_int
from difflab import distributed
from difflab.distributed import DEVICES
from difflab.nets import NetworkConfig
from difflab.objectives import LOSSES
from difflab.precision import TRAINING_PRECISIONS
from difflab.train.checkpoint import load_checkpoint
from difflab.train.conditions import COND_KINDS
from difflab.train.config import ExperimentConfig, load_config
from difflab.train.trainer import Trainer

RECIPES = Path(__file__).resolve().parent.parent / "configs"


def register(subparsers) -> None:
    p = subparsers.add_parser("train", help="train a diffusion model", description=__doc__)
    p.add_argument("--objective", choices=["diffusion", "consistency"], default="diffusion",
                   help="consistency: consistency training, the same as difflab train-consistency (and its flags)")
    p.add_argument("--config", help="JSON experiment config (default: configs/fashion_mnist.json, or "
                                    "configs/toy.json for toy data)")
    p.add_argument("--data", help="fashion-mnist | DIR of images | toy:swissroll|8gaussians|checkerboard|moons")
    p.add_argument("--data-root", help="folder holding the Fashion-MNIST IDX files")
    p.add_argument("--steps", type=positive_int("--steps"), help="optimizer steps")
    p.add_argument("--minutes", type=positive_float("--minutes"), help="wall-clock budget")
    p.add_argument("--batch", type=positive_int("--batch"))
    p.add_argument("--lr", type=positive_float("--lr"))
    p.add_argument("--seed", type=int)
    p.add_argument("--accumulate", type=positive_int("--accumulate"), help="micro-batches per optimizer step")
    p.add_argument("--precision", choices=TRAINING_PRECISIONS,
                   help="bf16/fp16 run forward and loss under autocast; fp16 adds dynamic loss scaling; auto (the "
                        "default recipe's): bf16 on a CPU with AMX bf16 units, fp32 elsewhere")
    p.add_argument("--compile", action="store_true", default=None,
                   help="torch.compile the network (falls back to eager, with a warning, where compiling fails)")
    p.add_argument("--device", choices=DEVICES, help="where to train (default auto: cuda where available)")
    p.add_argument("--cond", choices=COND_KINDS, help="condition on class labels, captions (text) or both, with "
                                                     "dropout to the null condition (p_uncond in the config)")
    p.add_argument("--label-lr-scale", type=positive_float("--label-lr-scale"),
                   help="learning-rate multiplier for the class-label table (fine-tuning a zero-initialised table)")
    p.add_argument("--loss", choices=LOSSES, help="simple: L_simple with fixed variance (default); hybrid: "
                   "L_simple + 0.001 L_vlb with learned variance; vlb: L_vlb with learned variance and importance-"
                   "sampled t (Nichol & Dhariwal 2021); hybrid and vlb set network.learned_variance; edm: Karras et "
                   "al.'s loss, for a config with precond.kind edm (configs/fashion_mnist_edm.json)")
    p.add_argument("--init", help="start from this checkpoint's EMA weights (fine-tuning), and without --config from "
                                  "its network too; new layers keep their init")
    p.add_argument("--low-res-augmentation", type=float, help="super-resolution (train.low_res): the largest "
                   "noise-augmentation level s of the low-resolution condition, drawn from U[0, s]; 0: none")
    p.add_argument("--max-timestep", type=int, help="train a refiner: only the low-noise levels t < this (of the "
                   "schedule's T; SDXL's refiner: 200 of 1000), for difflab sample --refiner")
    p.add_argument("--autoencoder", metavar="AE.safetensors", help="latent diffusion: train on the scaled latents of "
                   "this frozen autoencoder (difflab train-autoencoder), referred to by path and sha256")
    p.add_argument("--out", default="runs/train", help="output folder (checkpoint, log, plots, samples)")
    p.add_argument("--resume", action="store_true", help="continue exactly from OUT/checkpoint.safetensors")
    p.set_defaults(handler=run)


def training_config(args: argparse.Namespace) -> ExperimentConfig:
    """The --config file (default: the recipe for the kind of data) with the flags given replacing its fields."""
    toy = (args.data or "").startswith("toy:")
    config = load_config(args.config or RECIPES / ("toy.json" if toy else "fashion_mnist.json"))
    if args.init and not args.config and Path(args.init).is_file():  # fine-tuning keeps the checkpoint's network
        config = replace(config, network=unconditional(load_checkpoint(args.init).config.network))
    overrides = {k: v for k, v in {"data": args.data, "data_root": args.data_root, "batch": args.batch,
                                   "lr": args.lr, "seed": args.seed, "cond": args.cond, "init_from": args.init,
                                   "accumulate": args.accumulate, "precision": args.precision,
                                   "compile": args.compile, "device": args.device,
                                   "loss": args.loss, "label_lr_scale": args.label_lr_scale,
                                   "low_res_augmentation": args.low_res_augmentation,
                                   "max_timestep": args.max_timestep,
                                   "autoencoder": args.autoencoder and str(Path(args.autoencoder).resolve())
                                   }.items() if v is not None}
    if args.steps is not None or args.minutes is not None:
        # a budget given on the command line replaces the recipe's
        overrides.update(steps=args.steps, minutes=args.minutes)
    network = config.network
    if args.loss is not None:  # hybrid and vlb train the variance fraction v (Nichol & Dhariwal 2021, Sec. 3.1)
        network = replace(network, learned_variance=args.loss in ("hybrid", "vlb"))
    return replace(config, network=network, train=replace(config.train, **overrides))


def unconditional(network: NetworkConfig) -> NetworkConfig:
    """The network without its condition inputs (the trainer adds those that --cond asks for)."""
    return replace(network, **{name: None for name in ("num_classes", "text_dim") if hasattr(network, name)})


def run(args: argparse.Namespace) -> int:
    """Train; under torchrun (`torchrun --nproc-per-node N -m difflab train ...`) every process runs this."""
    try:
        trainer = Trainer(training_config(args), args.out, resume=args.resume)
        result = trainer.run()
    finally:
        distributed.close()
    if trainer.shard.is_main:
        processes = f" on {trainer.shard.world} processes" if trainer.shard.world > 1 else ""
        print(f"trained to step {result.step}{processes}")
        print(f"checkpoint: {result.checkpoint}")
        print(f"samples:    {result.samples}")
        print(f"loss plot:  {result.loss_plot}")
    return 0
