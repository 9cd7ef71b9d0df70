"""CLI subcommands (see difflab.cli.COMMAND_MODULES)."""

from __future__ import annotations

import argparse
from pathlib import Path

import torch

from difflab.errors import DifflabError

ASSETS = Path(__file__).resolve().parent.parent / "assets"
BUNDLED_MODEL = ASSETS / "fashion_mnist" / "model.safetensors"  # unconditional (the demo's)
BUNDLED_CONDITIONAL_MODEL = ASSETS / "fashion_mnist_cond" / "model.safetensors"  # classes and text prompts
BUNDLED_LATENT_MODEL = ASSETS / "fashion_mnist_latent" / "model.json"  # classes and text prompts, in latent space
BUNDLED_NAMES = {"latent": BUNDLED_LATENT_MODEL}  # what a model argument may name instead of a file


def model_file(spec: str | None, default: Path) -> Path:
    """A model argument: a file, a bundled model's name (BUNDLED_NAMES; a file of that name comes first), or None
    for `default`."""
    if spec is None:
        return default
    return BUNDLED_NAMES[spec] if spec in BUNDLED_NAMES and not Path(spec).is_file() else Path(spec)


def _positive(name: str, kind: type, noun: str):
    """argparse type for a number > 0 whose error names the flag."""

    def parse(text: str):
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{name} must be {noun}, got {text!r}") from None
        if not value > 0:
            raise argparse.ArgumentTypeError(f"{name} must be > 0, got {value}")
        return value

    return parse


def positive_int(name: str):
    return _positive(name, int, "an integer")


def positive_float(name: str):
    return _positive(name, float, "a number")


def set_threads(threads: int | None) -> None:
    if threads is not None:
        if threads <= 0:
            raise DifflabError(f"--threads must be > 0, got {threads}")
        torch.set_num_threads(threads)
