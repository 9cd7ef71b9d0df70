"""`difflab train-lora`, `difflab dreambooth` and `difflab textual-inversion`: teach a frozen text-conditional model
(the bundled conditional Fashion-MNIST model by default) a subject or style from a few captioned images.

    difflab train-lora --data fashion-mnist:Bag --caption "a bag" --rank 4 --out runs/lora
    difflab dreambooth --instance DIR --instance-prompt "a sks bag" --class-prompt "a bag" --num-class-images 200
    difflab textual-inversion --images DIR --token "<my-shoe>" --init-word shoe
    difflab sample --lora runs/lora/lora.safetensors:0.8 --embedding runs/ti/embedding.safetensors --prompt ...
"""

from __future__ import annotations

import argparse

from difflab.adapters.lora import DEFAULT_TARGETS, LoraConfig
from difflab.adapters.train import Recipe, describe, subject_data, train_embedding, train_personalized
from difflab.commands import BUNDLED_CONDITIONAL_MODEL, positive_float, positive_int, set_threads
from difflab.distributed import DEVICES
from difflab.errors import DifflabError


def add_common(p: argparse.ArgumentParser, lr: float, out: str) -> None:
    p.add_argument("--base", help="the frozen base model: a checkpoint or manifest (default: the bundled "
                                  "text-conditional model)")
    p.add_argument("--steps", type=positive_int("--steps"), help=f"optimizer steps (default {Recipe.steps})")
    p.add_argument("--minutes", type=positive_float("--minutes"), help="wall-clock budget (with --steps: whichever "
                                                                       "ends first)")
    p.add_argument("--batch", type=positive_int("--batch"), default=Recipe.batch,
                   help=f"images per step (default {Recipe.batch}; a few images are repeated to fill it)")
    p.add_argument("--lr", type=positive_float("--lr"), default=lr, help=f"learning rate (default {lr:g})")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", choices=DEVICES, default="auto")
    p.add_argument("--threads", type=int, help="CPU threads for torch")
    p.add_argument("--data-root", help="folder holding the Fashion-MNIST IDX files")
    p.add_argument("--out", default=out, help=f"output folder (default {out})")


def add_lora(p: argparse.ArgumentParser, flag: str, default: int | None) -> None:
    p.add_argument(flag, dest="rank", type=positive_int(flag), default=default,
                   help="LoRA rank r" + (f" (default {default})" if default else
                                         "; without it the whole network is fine-tuned"))
    p.add_argument("--alpha", type=positive_float("--alpha"), help="LoRA alpha: the update is scaled by alpha / r "
                                                                   "(default: alpha = r)")
    p.add_argument("--target", action="append", help="regular expression over module names to adapt (repeatable; "
                                                     f"default the attention projections, {DEFAULT_TARGETS[0]!r})")


def register(subparsers) -> None:
    p = subparsers.add_parser("train-lora", help="train a LoRA on captioned images", description=__doc__,
                              formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", required=True, help="DIR of images, or fashion-mnist:CLASS[,CLASS] (e.g. "
                                                 "fashion-mnist:Bag)")
    p.add_argument("--caption", required=True, help="the prompt every image is trained under")
    add_lora(p, "--rank", 4)
    add_common(p, 1e-3, "runs/lora")
    p.set_defaults(handler=run_lora)

    p = subparsers.add_parser("dreambooth", help="DreamBooth: fine-tune (whole network or a LoRA) on a few images of "
                                                 "a subject, with prior preservation", description=__doc__,
                              formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--instance", required=True, help="DIR of the subject's images (3-5 suffice)")
    p.add_argument("--instance-prompt", required=True, help='e.g. "a sks bag"')
    p.add_argument("--class-prompt", help='e.g. "a bag": the base model draws class images of it for prior '
                                          "preservation")
    p.add_argument("--prior-weight", type=float, default=1.0, help="lambda of the prior-preservation loss "
                                                                   "(default 1)")
    p.add_argument("--num-class-images", type=int, default=100,
                   help="class images drawn by the base model and cached under OUT/class_images (default 100; 0: "
                        "no prior preservation)")
    p.add_argument("--class-dir", help="folder to cache the class images in (default OUT/class_images/BASE-PROMPT)")
    add_lora(p, "--lora", None)
    add_common(p, 1e-4, "runs/dreambooth")
    p.set_defaults(handler=run_dreambooth)

    p = subparsers.add_parser("textual-inversion", help="learn a new token's embedding from a few images",
                              description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--images", required=True, help="DIR of images of the concept, or fashion-mnist:CLASS")
    p.add_argument("--token", required=True, help='the new token as it will be written in prompts, e.g. "<my-shoe>"')
    p.add_argument("--init-word", required=True, help="a word whose embedding the token starts from, e.g. shoe")
    p.add_argument("--num-vectors", type=positive_int("--num-vectors"), default=1,
                   help="embedding vectors the token stands for (default 1)")
    add_common(p, 5e-3, "runs/textual_inversion")
    p.set_defaults(handler=run_textual_inversion)


def recipe(args: argparse.Namespace) -> Recipe:
    budget = {"steps": args.steps, "minutes": args.minutes} if args.steps or args.minutes else {}
    return Recipe(batch=args.batch, lr=args.lr, seed=args.seed, device=args.device, **budget)


def lora_config(args: argparse.Namespace) -> LoraConfig | None:
    if args.rank is None:
        return None
    targets = {"targets": tuple(args.target)} if args.target else {}
    return LoraConfig(rank=args.rank, alpha=args.alpha or float(args.rank), **targets)


def run_lora(args: argparse.Namespace) -> int:
    set_threads(args.threads)
    result = train_personalized(args.base or BUNDLED_CONDITIONAL_MODEL, subject_data(args.data, args.data_root),
                                args.caption, args.out, lora=lora_config(args), recipe=recipe(args))
    print(describe(result))
    return 0


def run_dreambooth(args: argparse.Namespace) -> int:
    set_threads(args.threads)
    if args.num_class_images < 0:
        raise DifflabError(f"--num-class-images must be >= 0, got {args.num_class_images}")
    if not args.prior_weight >= 0:
        raise DifflabError(f"--prior-weight must be >= 0, got {args.prior_weight}")
    result = train_personalized(args.base or BUNDLED_CONDITIONAL_MODEL, subject_data(args.instance, args.data_root),
                                args.instance_prompt, args.out, lora=lora_config(args), recipe=recipe(args),
                                class_prompt=args.class_prompt, num_class_images=args.num_class_images,
                                prior_weight=args.prior_weight, class_dir=args.class_dir)
    print(describe(result))
    return 0


def run_textual_inversion(args: argparse.Namespace) -> int:
    set_threads(args.threads)
    result = train_embedding(args.base or BUNDLED_CONDITIONAL_MODEL, subject_data(args.images, args.data_root),
                             args.token, args.init_word, args.out, num_vectors=args.num_vectors,
                             recipe=recipe(args))
    print(describe(result))
    return 0
