"""`difflab sample`: draw samples from a checkpoint (the bundled Fashion-MNIST model by default)."""

from __future__ import annotations

import argparse
import inspect
import time
from pathlib import Path

import torch

from difflab.commands import BUNDLED_MODEL, positive_int, set_threads
from difflab.errors import DifflabError
from difflab.grids import GRIDS
from difflab.images import save_samples
from difflab.pipelines.generate import generate
from difflab.samplers import get_sampler
from difflab.train.checkpoint import load_denoiser


def add_sampling_arguments(p: argparse.ArgumentParser) -> None:
    """The flags that choose how to sample; shared by every command that generates."""
    p.add_argument("--sampler", default="ddim", help="sampler name (see `difflab samplers`); default ddim")
    p.add_argument("--steps", type=positive_int("--steps"), default=50, help="number of steps (default 50)")
    p.add_argument("--grid", default="trailing", choices=GRIDS, help="noise-level spacing (default trailing)")
    p.add_argument("--eta", type=float, help="DDIM stochasticity (0 = deterministic, 1 = DDPM)")
    p.add_argument("--variance", choices=["beta_tilde", "beta"], help="DDPM posterior variance")
    p.add_argument("--seed", type=int, default=0, help="sample i uses seed + i")
    p.add_argument("--batch", type=positive_int("--batch"), default=64)
    p.add_argument("--threads", type=int, help="CPU threads for torch")


def sampler_options(args: argparse.Namespace) -> dict:
    """Keyword options for the chosen sampler; an option the sampler does not take is an error."""
    info = get_sampler(args.sampler)
    accepted = inspect.signature(info.fn).parameters
    options = {name: getattr(args, name) for name in ("eta", "variance") if getattr(args, name) is not None}
    for name in options:
        if name not in accepted:
            raise DifflabError(f"--{name} does not apply to sampler {args.sampler!r}")
    if "eta" in options and options["eta"] < 0:
        raise DifflabError(f"--eta must be >= 0, got {options['eta']}")
    return options


def register(subparsers) -> None:
    p = subparsers.add_parser("sample", help="sample from a checkpoint", description=__doc__)
    p.add_argument("checkpoint", nargs="?", help="a .safetensors checkpoint (default: the bundled model)")
    add_sampling_arguments(p)
    p.add_argument("--n", type=positive_int("--n"), default=64, help="number of samples (default 64)")
    p.add_argument("--class", dest="label", type=int, help="class index for a class-conditional model")
    p.add_argument("--out", default="samples.png", help="FILE.png (grid or scatter plot) or FILE.npz")
    p.set_defaults(handler=run)


def class_labels(names: tuple[str, ...] | None, label: int | None, n: int) -> torch.Tensor | None:
    if label is None:
        return None
    if names is None:
        raise DifflabError("--class needs a class-conditional model; this checkpoint is unconditional")
    if not 0 <= label < len(names):
        raise DifflabError(f"--class must lie in 0..{len(names) - 1} ({', '.join(names)}), got {label}")
    return torch.full((n,), label, dtype=torch.long)


def run(args: argparse.Namespace) -> int:
    set_threads(args.threads)
    if Path(args.out).suffix.lower() not in (".png", ".npz"):
        raise DifflabError(f"--out must end in .png or .npz, got {args.out!r}")
    options = sampler_options(args)
    denoiser, checkpoint = load_denoiser(args.checkpoint or BUNDLED_MODEL)
    config = checkpoint.config
    labels = class_labels(config.class_names, args.label, args.n)
    start = time.perf_counter()
    x = generate(denoiser, config.data_shape, args.n, sampler=args.sampler, steps=args.steps, grid=args.grid,
                 seed=args.seed, batch=args.batch, labels=labels, options=options, progress=True)
    save_samples(x, args.out, labels, title=f"{args.sampler}, {args.steps} steps")
    print(f"wrote {args.n} samples to {args.out} ({args.sampler}, {args.steps} steps, "
          f"{time.perf_counter() - start:.1f} s)")
    return 0
