"""The guidance flags shared by every command that generates (sample, eval) and the GuidanceRequest they make."""

from __future__ import annotations

import argparse
from pathlib import Path

from difflab.guidance import CLASSIFIER_FORMS, DEFAULT_PERCENTILE, THRESHOLDS
from difflab.pipelines.guidance import GuidanceRequest

GUIDANCE_FLAGS = ("cfg", "negative_class", "negative_prompt", "threshold", "threshold_percentile", "classifier",
                  "classifier_scale", "classifier_form")


def add_guidance_arguments(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("guidance")
    g.add_argument("--cfg", type=float, metavar="W",
                   help="classifier-free guidance weight w >= 0 (0 = none); other tools' guidance/cfg scale is 1 + w")
    g.add_argument("--negative-class", type=int, metavar="K", help="with --cfg: guide away from class K instead of "
                                                                   "the unconditional model")
    g.add_argument("--negative-prompt", metavar="TEXT", help="with --cfg on a text model: guide away from TEXT "
                                                             "instead of the unconditional model")
    g.add_argument("--threshold", choices=THRESHOLDS, help="clip x0_hat to [-1, 1] (static) or Imagen's dynamic "
                                                           "thresholding")
    g.add_argument("--threshold-percentile", type=float, metavar="P",
                   help=f"--threshold dynamic: the percentile 0 < P <= 1 of |x0_hat| (default {DEFAULT_PERCENTILE})")
    g.add_argument("--classifier", metavar="CKPT", help="classifier guidance towards --class with a noise-aware "
                                                        "classifier (difflab train-classifier)")
    g.add_argument("--classifier-scale", type=float, metavar="S", help="classifier guidance scale s >= 0 (default 1); "
                   "alone, it guides with the classifier a model manifest names")
    g.add_argument("--classifier-form", choices=CLASSIFIER_FORMS,
                   help="eps: shift x0_hat, any sampler (default); mean: shift the ancestral mean, --sampler ddpm only")


def guidance_settings(args: argparse.Namespace) -> dict:
    """The guidance flags that were given, by name (for reports)."""
    return {name: getattr(args, name) for name in GUIDANCE_FLAGS if getattr(args, name, None) is not None}


def guidance_request(args: argparse.Namespace, model_classifier: Path | None = None) -> GuidanceRequest:
    """The guidance the flags ask for (difflab.pipelines checks it against the model). A model manifest's classifier
    (`model_classifier`) guides when --classifier-scale is given without --classifier."""
    classifier = args.classifier or (model_classifier if args.classifier_scale is not None else None)
    return GuidanceRequest(cfg=args.cfg, negative_label=args.negative_class, negative_prompt=args.negative_prompt,
                           threshold=args.threshold, percentile=args.threshold_percentile, classifier=classifier,
                           classifier_scale=args.classifier_scale, classifier_form=args.classifier_form)
