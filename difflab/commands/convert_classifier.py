"""`difflab convert-classifier`: a classifier file of the format before components (difflab-classifier-1), rewritten
as a classifier component with the same logits (its network is now the U-Net's encoder and middle)."""

from __future__ import annotations

import argparse
import json

from difflab.errors import DifflabError
from difflab.nets.classifier import NoiseAwareClassifier, convert_legacy_classifier
from difflab.schedules import ScheduleConfig
from difflab.train.checkpoint import LEGACY_CLASSIFIER, read_safetensors, save_checkpoint
from difflab.train.classifier_config import ClassifierSpec, ClassifierTrainConfig

TRAINING_STATE = ("optim.", "rng.")  # what a mid-run save of the old format added beside the weights


def register(subparsers) -> None:
    p = subparsers.add_parser("convert-classifier", help="convert a classifier of the old format to a component",
                              description=__doc__)
    p.add_argument("old", help="a difflab-classifier-1 .safetensors file")
    p.add_argument("new", help="the component file to write")
    p.set_defaults(handler=run)


def convert(old: str, new: str) -> None:
    tensors, metadata = read_safetensors(old, "convert-classifier:")
    if metadata.get("format") != LEGACY_CLASSIFIER:
        raise DifflabError(f"convert-classifier: {old} is not a classifier of the old format "
                           f"(format {metadata.get('format')!r})")
    if "optimizer_groups" in metadata:
        raise DifflabError(f"convert-classifier: {old} is an unfinished run; finish it with the difflab that wrote it")
    spec = json.loads(metadata["config"])
    network, weights = convert_legacy_classifier(
        spec["network"], {k: v for k, v in tensors.items() if not k.startswith(TRAINING_STATE)})
    component = ClassifierSpec(network, ScheduleConfig(**spec["schedule"]), tuple(spec["class_names"]),
                               tuple(spec["data_shape"]), ClassifierTrainConfig(**spec["train"]))
    net = NoiseAwareClassifier(network)
    net.load_state_dict(weights)
    save_checkpoint(new, component, int(metadata["step"]), kind="classifier", model=net,
                    extra_metadata={"accuracy": metadata.get("accuracy", "{}")})


def run(args: argparse.Namespace) -> int:
    convert(args.old, args.new)
    print(f"wrote {args.new}")
    return 0
