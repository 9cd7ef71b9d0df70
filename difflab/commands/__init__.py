"""CLI subcommands (see difflab.cli.COMMAND_MODULES)."""

from __future__ import annotations

import argparse
from pathlib import Path

import torch

from difflab.errors import DifflabError

BUNDLED_MODEL = Path(__file__).resolve().parent.parent / "assets" / "fashion_mnist" / "model.safetensors"


def positive_int(name: str):
    """argparse type for an integer > 0 whose error names the flag."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{name} must be an integer, got {text!r}") from None
        if value <= 0:
            raise argparse.ArgumentTypeError(f"{name} must be > 0, got {value}")
        return value

    return parse


def positive_float(name: str):
    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{name} must be a number, got {text!r}") from None
        if not value > 0:
            raise argparse.ArgumentTypeError(f"{name} must be > 0, got {value}")
        return value

    return parse


def set_threads(threads: int | None) -> None:
    if threads is not None:
        if threads <= 0:
            raise DifflabError(f"--threads must be > 0, got {threads}")
        torch.set_num_threads(threads)
