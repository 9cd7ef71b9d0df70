"""The guidance a request asks for, checked against the model and built as a difflab.guidance.Guidance."""

from __future__ import annotations

from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

from difflab.guidance import ClassifierForm, Guidance, Threshold
from difflab.pipelines.conditions import accepted, request_condition
from difflab.pipelines.dialect import CLI, Dialect
from difflab.train.classifier import load_classifier
from difflab.train.config import ExperimentConfig

SETTINGS = ("cfg", "threshold", "percentile", "classifier_scale", "classifier_form")  # passed to Guidance as given
NEGATIVES = ("negative_label", "negative_prompt")


@dataclass(frozen=True)
class GuidanceRequest:
    """Guidance as asked for; None is "not given" (Guidance's default applies). cfg is Ho & Salimans' w."""

    cfg: float | None = None
    negative_label: int | None = None  # what classifier-free guidance steers away from instead of the null condition
    negative_prompt: str | None = None
    threshold: Threshold | None = None
    percentile: float | None = None  # of dynamic thresholding
    classifier: str | Path | None = None  # a noise-aware classifier checkpoint guiding towards the request's label
    classifier_scale: float | None = None
    classifier_form: ClassifierForm | None = None

    def given(self) -> dict[str, Any]:
        return {f.name: getattr(self, f.name) for f in fields(self) if getattr(self, f.name) is not None}

    def unguided_negatives(self) -> list[str]:
        """The negative fields given without classifier-free guidance (w > 0), where they have no effect."""
        return [name for name in NEGATIVES if getattr(self, name) is not None and not (self.cfg or 0) > 0]


def plan_guidance(request: GuidanceRequest, config: ExperimentConfig,
                  dialect: Dialect = CLI) -> tuple[Guidance | None, tuple[str, ...] | None]:
    """The Guidance asked for (None: none) and the class names a label indexes: the model's, or for an unconditional
    model guided by a classifier, the classifier's (None: no classes). What cannot apply is an error naming it."""
    given = request.given()
    names = config.class_names if "class" in accepted(config) else None
    if not given:
        return None, names
    if request.cfg is not None and not accepted(config):
        cfg, neutral = dialect.name("cfg"), dialect.neutral_cfg
        raise dialect.refuse("cfg", f"needs a conditional model; {dialect.model} is unconditional, so {cfg} must be "
                                    f"{neutral:g} (no guidance); got {request.cfg + neutral:g}")
    for name in request.unguided_negatives():
        raise dialect.refuse(name, f"needs {dialect.name('cfg')} > {dialect.neutral_cfg:g}: it replaces the null "
                                   f"condition of classifier-free guidance")
    if request.percentile is not None and request.threshold != "dynamic":
        raise dialect.refuse("percentile", f"applies only to {dialect.name('threshold')} dynamic")
    latent = config.train.autoencoder is not None  # a latent model: x0_hat is a scaled latent, not pixels in [-1, 1]
    for name in ("threshold", "classifier"):
        if latent and getattr(request, name) is not None:
            raise dialect.refuse(name, f"acts on pixels in [-1, 1], and {dialect.model} samples autoencoder latents "
                                       f"(they have no such range); leave it out")
    for name in ("classifier_scale", "classifier_form"):
        if name in given and request.classifier is None:
            raise dialect.refuse(name, f"needs {dialect.name('classifier')} CKPT")
    classifier = None
    if request.classifier is not None:
        classifier, spec = load_classifier(request.classifier)
        if names is not None and tuple(names) != spec.class_names:
            raise dialect.refuse("classifier", f"knows classes {', '.join(spec.class_names)}, but the model's are "
                                               f"{', '.join(names)}")
        if spec.data_shape[0] != config.data_shape[0]:
            raise dialect.refuse("classifier", f"takes {spec.data_shape[0]}-channel images, but the model makes "
                                               f"{config.data_shape[0]}-channel ones")
        names = names or spec.class_names
    negative = request_condition(config, label=request.negative_label, prompt=request.negative_prompt,
                                 class_names=names, label_field="negative_label", prompt_field="negative_prompt",
                                 dialect=dialect)
    settings = {name: value for name, value in given.items() if name in SETTINGS}
    return Guidance(negative=negative, classifier=classifier, **settings), names
