"""The guidance flags shared by every command that generates (sample, eval) and the Guidance they ask for."""

from __future__ import annotations

import argparse

from difflab.errors import DifflabError
from difflab.guidance import CLASSIFIER_FORMS, DEFAULT_PERCENTILE, THRESHOLDS, Guidance
from difflab.pipelines.conditions import accepts_class, is_conditional, request_condition
from difflab.train.classifier import load_classifier
from difflab.train.config import ExperimentConfig

# flag attribute -> default when the flag is not given
GUIDANCE_FLAGS = {"cfg": 0.0, "negative_class": None, "negative_prompt": None, "threshold": None,
                  "threshold_percentile": DEFAULT_PERCENTILE, "classifier": None, "classifier_scale": 1.0, "classifier_form": "eps"}


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
    g.add_argument("--classifier-scale", type=float, metavar="S", help="classifier guidance scale s >= 0 (default 1)")
    g.add_argument("--classifier-form", choices=CLASSIFIER_FORMS,
                   help="eps: shift x0_hat, any sampler (default); mean: shift the ancestral mean, --sampler ddpm only")


def guidance_settings(args: argparse.Namespace) -> dict:
    """The guidance flags that were given, by name (for reports)."""
    return {name: getattr(args, name) for name in GUIDANCE_FLAGS if getattr(args, name, None) is not None}


def guidance_from_args(args: argparse.Namespace,
                       config: ExperimentConfig) -> tuple[Guidance | None, tuple[str, ...] | None]:
    """The Guidance the flags ask for (None: no guidance) and the class names --class refers to: the model's, or
    for an unconditional model guided by a classifier, the classifier's (None: the model has no classes)."""
    given = guidance_settings(args)
    names = config.class_names if accepts_class(config) else None
    if not given:
        return None, names
    if "cfg" in given and not is_conditional(config):
        raise DifflabError("--cfg needs a conditional model; this checkpoint is unconditional")
    for name in ("negative_class", "negative_prompt"):
        if name in given and not given.get("cfg", 0) > 0:
            raise DifflabError(f"--{name.replace('_', '-')} needs --cfg W > 0: it replaces the null condition of "
                               f"classifier-free guidance")
    if "threshold_percentile" in given and args.threshold != "dynamic":
        raise DifflabError("--threshold-percentile applies only to --threshold dynamic")
    for name in ("classifier_scale", "classifier_form"):
        if name in given and args.classifier is None:
            raise DifflabError(f"--{name.replace('_', '-')} needs --classifier CKPT")
    settings = {**GUIDANCE_FLAGS, **given}
    classifier = None
    if args.classifier is not None:
        classifier, spec = load_classifier(args.classifier)
        if names is not None and tuple(names) != spec.class_names:
            raise DifflabError(f"--classifier knows classes {', '.join(spec.class_names)}, but the model's are "
                               f"{', '.join(names)}")
        if spec.data_shape[0] != config.data_shape[0]:
            raise DifflabError(f"--classifier takes {spec.data_shape[0]}-channel images, but the model makes "
                               f"{config.data_shape[0]}-channel ones")
        names = names or spec.class_names
    negative = request_condition(config, label=args.negative_class, prompt=args.negative_prompt, class_names=names,
                                 label_flag="--negative-class", prompt_flag="--negative-prompt")
    guidance = Guidance(cfg=settings["cfg"], negative=negative, threshold=settings["threshold"],
                        percentile=settings["threshold_percentile"], classifier=classifier,
                        classifier_scale=settings["classifier_scale"], classifier_form=settings["classifier_form"])
    guidance.check_sampler(args.sampler)
    return guidance, names
