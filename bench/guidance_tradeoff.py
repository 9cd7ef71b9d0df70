"""Guidance trade-off: sample fidelity/diversity (FD) against class accuracy over the guidance weight.

For each classifier-free guidance weight w (the other tools' scale is 1 + w) it draws N class-balanced samples
(sample i asks for class i mod K) with DDIM from one seed, and scores them with difflab.eval against the
Fashion-MNIST test set: FD (lower is better), the feature net's accuracy against the requested class,
precision and recall. With --classifier, the same sweep over the classifier guidance scale s (eps form, on the
conditional model at w = 0, or on an unconditional model). Prints a table, writes JSON and one plot per sweep.

    difflab train --cond class --out runs/class
    difflab train-classifier --out runs/classifier
    python bench/guidance_tradeoff.py runs/class/checkpoint.safetensors [--weights 0,0.5,1,2,3,4,6,8] [--n 1000]
        [--steps 50] [--threshold dynamic] [--classifier runs/classifier/classifier.safetensors
        --classifier-scales 0,1,2,4,8] [--out guidance_tradeoff] [--threads 1]
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

from difflab.conditioning import Condition
from difflab.errors import run_script
from difflab.eval.feature_net import IMAGE_SIZE
from difflab.eval.plots import plot_guidance_tradeoff
from difflab.eval.report import evaluate_images
from difflab.guidance import THRESHOLDS, Guidance
from difflab.images import to_uint8
from difflab.pipelines.generate import generate
from difflab.train.checkpoint import load_denoiser
from difflab.train.classifier import load_classifier

METRICS = ("fd", "accuracy", "precision", "recall")


def numbers(text: str) -> list[float]:
    try:
        values = [float(v) for v in text.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated numbers, got {text!r}") from None
    if any(v < 0 for v in values):
        raise argparse.ArgumentTypeError(f"guidance weights and scales must be >= 0, got {text!r}")
    return values


def sweep(name: str, values: list[float], make_guidance, denoiser, shape, labels: torch.Tensor,
          args: argparse.Namespace) -> list[dict]:
    """One row of metrics per guidance value, printed as it is measured."""
    print(f"\n{name:>6} " + "".join(f"{m:>11}" for m in METRICS) + f"{'seconds':>10}", flush=True)
    rows = []
    for value in values:
        start = time.perf_counter()
        x = generate(denoiser, shape, len(labels), sampler="ddim", steps=args.steps, seed=args.seed,
                     batch=args.batch, cond=Condition(labels), guidance=make_guidance(value))
        metrics = evaluate_images(to_uint8(x), labels.numpy(), data_root=args.data_root)
        row = {name: value, **{m: metrics[m] for m in METRICS}, "seconds": round(time.perf_counter() - start, 1)}
        rows.append(row)
        print(f"{value:>6g} " + "".join(f"{row[m]:>11.4f}" for m in METRICS) + f"{row['seconds']:>10.1f}", flush=True)
    return rows


def plot(rows: list[dict], name: str, path: Path) -> None:
    plot_guidance_tradeoff([r[name] for r in rows], [r["fd"] for r in rows],
                           {m: [r[m] for r in rows] for m in METRICS[1:]}, path, symbol=name)
    print(f"plot: {path}")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("checkpoint", help="a Fashion-MNIST checkpoint (class-conditional for the CFG sweep)")
    p.add_argument("--weights", type=numbers, default=[0, 0.5, 1, 2, 3, 4, 6, 8], help="CFG weights w")
    p.add_argument("--n", type=int, default=1000, help="samples per guidance value (default 1000)")
    p.add_argument("--steps", type=int, default=50, help="DDIM steps (default 50)")
    p.add_argument("--batch", type=int, default=250)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threshold", choices=THRESHOLDS, help="thresholding of x0_hat in every run")
    p.add_argument("--classifier", help="also sweep classifier guidance with this noise-aware classifier")
    p.add_argument("--classifier-scales", type=numbers, default=[0, 1, 2, 4, 8], help="classifier scales s")
    p.add_argument("--data-root", help="folder holding the Fashion-MNIST IDX files")
    p.add_argument("--out", default="guidance_tradeoff", help="prefix of the JSON and PNG files written")
    p.add_argument("--threads", type=int, help="torch CPU threads")
    args = p.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    denoiser, checkpoint = load_denoiser(args.checkpoint)
    config = checkpoint.config
    if config.data_shape != (1, *IMAGE_SIZE):
        raise SystemExit(f"{args.checkpoint} makes samples of shape {list(config.data_shape)}; the evaluation "
                         "needs 1x28x28 Fashion-MNIST images")
    classifier = None
    names = config.class_names
    if args.classifier:
        classifier, spec = load_classifier(args.classifier)
        names = names or spec.class_names
    if names is None:
        raise SystemExit(f"{args.checkpoint} is unconditional: the CFG sweep needs a class-conditional model "
                         "(difflab train --cond class), and a classifier sweep needs --classifier")
    labels = torch.arange(args.n) % len(names)
    print(f"{args.checkpoint}: {args.n} class-balanced samples per value, DDIM {args.steps} steps, seed {args.seed}"
          + (f", {args.threshold} thresholding" if args.threshold else ""))
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    result = {"checkpoint": str(args.checkpoint), "n": args.n, "steps": args.steps, "seed": args.seed,
              "threshold": args.threshold}
    if config.class_names is not None:
        result["cfg"] = sweep("w", args.weights, lambda w: Guidance(cfg=w, threshold=args.threshold),
                              denoiser, config.data_shape, labels, args)
        plot(result["cfg"], "w", out.with_name(out.name + "_cfg.png"))
    if classifier is not None:
        result["classifier_path"] = str(args.classifier)
        result["classifier"] = sweep("s", args.classifier_scales,
                                     lambda s: Guidance(threshold=args.threshold, classifier=classifier,
                                                        classifier_scale=s),
                                     denoiser, config.data_shape, labels, args)
        plot(result["classifier"], "s", out.with_name(out.name + "_classifier.png"))
    path = out.with_name(out.name + ".json")
    path.write_text(json.dumps(result, indent=2))
    print(f"results: {path}")


if __name__ == "__main__":
    run_script(main)
