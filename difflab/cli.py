"""`difflab` command line: each subcommand module adds its parser and returns its handler."""

from __future__ import annotations

import argparse
import sys

from difflab.allocator import keep_freed_memory
from difflab.errors import DifflabError

# Modules with register(subparsers) that add one or more subcommands, each with set_defaults(handler=...).
COMMAND_MODULES = ("difflab.commands.demo", "difflab.commands.train", "difflab.commands.sample",
                   "difflab.commands.samplers", "difflab.commands.export", "difflab.commands.average",
                   "difflab.commands.eval",
                   "difflab.commands.serve", "difflab.commands.train_classifier", "difflab.commands.convert_classifier",
                   "difflab.commands.nll", "difflab.commands.train_autoencoder",
                   "difflab.commands.personalize", "difflab.commands.train_controlnet",
                   "difflab.commands.edit", "difflab.commands.distill", "difflab.commands.train_consistency")


class Parser(argparse.ArgumentParser):
    """Reports a bad flag in one line (with a pointer to --help) instead of the whole usage block."""

    def error(self, message: str):
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def build_parser() -> argparse.ArgumentParser:
    import importlib

    parser = Parser(prog="difflab", description="A diffusion-model laboratory on PyTorch.")
    subparsers = parser.add_subparsers(dest="command", required=True, metavar="COMMAND", parser_class=Parser)
    for name in COMMAND_MODULES:
        importlib.import_module(name).register(subparsers)
    return parser


def expand_aliases(argv: list[str]) -> list[str]:
    """`difflab train --objective consistency ...` is `difflab train-consistency ...`."""
    if argv[:1] != ["train"]:
        return argv
    for i, word in enumerate(argv):
        if word == "--objective=consistency" or argv[i:i + 2] == ["--objective", "consistency"]:
            return ["train-consistency", *argv[1:i], *argv[i + (1 if "=" in word else 2):]]
    return argv


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(expand_aliases(sys.argv[1:] if argv is None else list(argv)))
    keep_freed_memory()
    try:
        return args.handler(args) or 0
    except DifflabError as err:
        print(f"difflab {args.command}: error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"difflab {args.command}: interrupted", file=sys.stderr)
        return 130
