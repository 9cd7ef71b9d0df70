"""`difflab eval`: sample-quality metrics of a .npz of samples, or of N samples drawn from a checkpoint first.

Images (uint8 28x28, one channel) are compared with the Fashion-MNIST test set in the feature net's space:
FD, KID, precision/recall, class coverage, and accuracy when the file has the labels they were drawn for.
Toy points [N, 2] are compared with fresh draws of their distribution: sliced Wasserstein, energy distance,
Kolmogorov-Smirnov per axis and k-NN KL estimates.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from dataclasses import replace

import torch

from difflab.conditioning import Condition
from difflab import distributed
from difflab.commands import model_file, positive_int, set_threads
from difflab.commands.guidance_flags import add_guidance_arguments, guidance_settings
from difflab.commands.sample import add_sampling_arguments, request_from_args
from difflab.data.toy import sample_toy
from difflab.distributed import Shard, init_shard, resolve_device
from difflab.errors import DifflabError
from difflab.eval.feature_net import IMAGE_SIZE
from difflab.eval.report import evaluate_images, evaluate_points, format_table
from difflab.eval.samples import MIN_SAMPLES, Samples, read_samples
from difflab.images import save_samples, to_uint8
from difflab.pipelines.request import plan_request
from difflab.model import load_model

DEFAULT_GENERATED = 1000
REFERENCE_SEED = 1234  # the fresh toy draws: fixed, so two evaluations of one file agree


def register(subparsers) -> None:
    p = subparsers.add_parser("eval", help="FD, KID, precision/recall of samples (SWD, energy, KS, KL of toy points)",
                              description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("source", help="SAMPLES.npz ('images' uint8 [N, 28, 28] with optional 'labels', or 'points' "
                                  "[N, 2]) or a model to sample from (a .safetensors checkpoint or a .json manifest)")
    add_sampling_arguments(p)
    p.add_argument("--n", "--num-samples", dest="n", type=positive_int("--n"),
                   help=f"samples to draw from a checkpoint (default {DEFAULT_GENERATED}), or to take from the start "
                        "of a file (default all)")
    p.add_argument("--data", help="toy:NAME, the distribution a file of points is compared with")
    p.add_argument("--data-root", help="folder holding the Fashion-MNIST IDX files")
    p.add_argument("--k", type=positive_int("--k"), default=3,
                   help="neighbours for precision/recall and the KL estimate (default 3)")
    p.add_argument("--save", help="also write the generated samples to this .npz")
    p.add_argument("--json", action="store_true", help="print one JSON object instead of a table")
    add_guidance_arguments(p)
    p.set_defaults(handler=run)


def generate_samples(args: argparse.Namespace, shard: Shard, device: torch.device) -> tuple[Samples, str | None, dict]:
    """N samples from the checkpoint (class-balanced labels for a class-conditional one), its data spec and timing."""
    model = load_model(model_file(args.source, None))
    checkpoint = model.checkpoint
    n = args.n or DEFAULT_GENERATED
    request = request_from_args(args, model, n)
    config = checkpoint.config
    plan = plan_request(request, model.to(device).denoiser, config, decode=model.decoder)
    labels = None if plan.class_names is None else torch.arange(n) % len(plan.class_names)
    if model.image_shape not in ((2,), (1, *IMAGE_SIZE)):
        raise DifflabError(f"{args.source}: its samples have shape {list(model.image_shape)}; difflab eval takes "
                           "1x28x28 Fashion-MNIST images or 2-D toy points")
    start = time.perf_counter()
    x = replace(plan, cond=None if labels is None else Condition(labels)).sample(progress=shard.is_main)
    levels = {} if plan.levels is None else {"sigmas": ",".join(f"{level:g}" for level in plan.levels)}
    info = {"sampler": args.sampler, "steps": args.steps, **levels, **guidance_settings(args),
            **({} if args.precision == "fp32" else {"sampling_precision": args.precision}),
            "generate_seconds": round(time.perf_counter() - start, 1)}
    if args.save and shard.is_main:
        save_samples(x, args.save, labels)
    labels = None if labels is None else labels.numpy()
    if x.ndim == 2:
        return Samples(points=x.double().numpy()), args.data or config.train.data, info
    return Samples(images=to_uint8(x), labels=labels), args.data, info


def toy_name(spec: str | None) -> str:
    if spec is None or not spec.startswith("toy:"):
        raise DifflabError(f"--data: a file of points needs the toy distribution to compare with, "
                           f"toy:NAME; got {spec!r}")
    return spec[4:]


def run(args: argparse.Namespace) -> int:
    set_threads(args.threads)
    if args.n is not None and args.n < MIN_SAMPLES:
        raise DifflabError(f"--n must be >= {MIN_SAMPLES} for evaluation, got {args.n}")
    from_file = Path(args.source).suffix.lower() == ".npz"
    if from_file and guidance_settings(args):
        raise DifflabError(f"--{next(iter(guidance_settings(args))).replace('_', '-')} applies only when sampling "
                           f"from a checkpoint, not to samples read from {args.source!r}")
    if args.save is not None and (from_file or Path(args.save).suffix.lower() != ".npz"):
        raise DifflabError(f"--save FILE.npz applies only when sampling from a checkpoint, got {args.save!r} "
                           f"for {args.source!r}")
    if from_file:
        samples, data, info = read_samples(args.source).head(args.n), args.data, {}
    else:
        device = resolve_device(args.device)
        shard = init_shard(device)  # under torchrun the processes share the sampling; the main one measures and prints
        try:
            samples, data, info = generate_samples(args, shard, device)
        finally:
            distributed.close()
        if not shard.is_main:
            return 0
    start = time.perf_counter()
    if samples.points is not None:
        name = toy_name(data)
        reference = sample_toy(name, len(samples), torch.Generator().manual_seed(REFERENCE_SEED))
        metrics = evaluate_points(torch.from_numpy(samples.points), reference, f"toy:{name}", args.k)
    elif args.data is not None:
        raise DifflabError(f"--data applies only to toy points; images are compared with the Fashion-MNIST test set, "
                           f"got --data {args.data!r}")
    else:
        metrics = evaluate_images(samples.images, samples.labels, data_root=args.data_root, k=args.k,
                                  progress=True)
    metrics = {"source": args.source, **info, **metrics, "eval_seconds": round(time.perf_counter() - start, 1)}
    print(json.dumps(metrics) if args.json else format_table(metrics))
    return 0
