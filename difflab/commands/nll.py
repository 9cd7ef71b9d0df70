"""`difflab nll`: negative log-likelihood of test images in bits per dimension, with its standard error.

--method vlb: the variational bound over all T steps, discretized decoder (Ho et al. 2020, Eq. 5 and 13).
--method ode: the probability-flow ODE with Hutchinson's trace estimator on uniformly dequantized images
(Song et al. 2021, App. D.2). A conditional model is evaluated with the null condition, i.e. as p(x).
"""

from __future__ import annotations

import argparse
import json
import time

from difflab.commands import BUNDLED_MODEL, positive_int, set_threads
from difflab.data import load_dataset
from difflab.distributed import DEVICES, resolve_device
from difflab.errors import DifflabError
from difflab.likelihood.evaluate import METHODS, images_bits_per_dim
from difflab.likelihood.ode import PROBES
from difflab.model import load_model

DEFAULT_N = 256


def register(subparsers) -> None:
    p = subparsers.add_parser("nll", help="test-set bits/dim by the variational bound or the probability-flow ODE",
                              description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("checkpoint", nargs="?", default=str(BUNDLED_MODEL),
                   help="a .safetensors checkpoint (or .json model manifest) of an 8-bit image model (default: the "
                        "bundled Fashion-MNIST model)")
    p.add_argument("--method", choices=METHODS, default="vlb", help="vlb (default) or ode")
    p.add_argument("--n", type=positive_int("--n"), default=DEFAULT_N,
                   help=f"test images, the first N of the test split (default {DEFAULT_N})")
    p.add_argument("--batch", type=positive_int("--batch"), default=64)
    p.add_argument("--seed", type=int, default=0, help="batch b draws its noise from seed + b")
    p.add_argument("--probe", choices=PROBES, default="rademacher", help="ode: Hutchinson probe (default rademacher)")
    p.add_argument("--rtol", type=float, default=1e-5, help="ode: RK45 relative tolerance in (0, 1) (default 1e-5)")
    p.add_argument("--atol", type=float, default=1e-5, help="ode: RK45 absolute tolerance > 0 (default 1e-5)")
    p.add_argument("--data-root", help="folder holding the Fashion-MNIST IDX files")
    p.add_argument("--device", choices=DEVICES, default="auto", help="default auto: cuda where available")
    p.add_argument("--threads", type=int, help="CPU threads for torch")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    set_threads(args.threads)
    if not 0 < args.rtol < 1:
        raise DifflabError(f"--rtol must lie in (0, 1), got {args.rtol}")
    if not args.atol > 0:
        raise DifflabError(f"--atol must be > 0, got {args.atol}")
    model = load_model(args.checkpoint)
    denoiser, checkpoint = model.denoiser, model.checkpoint
    config = checkpoint.config
    if len(config.data_shape) != 3:
        raise DifflabError(f"{args.checkpoint} models {config.train.data!r} with examples of shape "
                           f"{list(config.data_shape)}; difflab nll needs a model of 8-bit images")
    if model.latent is not None:
        raise DifflabError(f"{args.checkpoint} is a latent model; its likelihood would be of autoencoder latents, "
                           "which have no discretized decoder to 8-bit pixels; difflab nll needs a pixel model")
    data = load_dataset(config.train.data, "test", args.data_root)
    images = data.batch(slice(0, args.n))[0]
    denoiser = denoiser.to(resolve_device(args.device))
    start = time.perf_counter()
    result = images_bits_per_dim(denoiser, images, method=args.method, batch=args.batch, seed=args.seed,
                                 probe=args.probe, rtol=args.rtol, atol=args.atol, progress=True)
    report = {"checkpoint": args.checkpoint, "method": args.method, "n": len(images),
              "bits_per_dim": round(result.mean, 4), "standard_error": round(result.standard_error, 4),
              "nfe_per_image": round(result.nfe, 1), "seconds": round(time.perf_counter() - start, 1)}
    if args.json:
        print(json.dumps(report))
    else:
        print(f"{result.mean:.4f} +- {result.standard_error:.4f} bits/dim ({args.method}, {len(images)} "
              f"{data.name} test images, {result.nfe:.0f} network evaluations per image, {report['seconds']} s)")
    return 0
