"""The ControlNet flags of `difflab sample`: control images, their annotators, control models, scale, mode, range."""

from __future__ import annotations

import argparse
from functools import lru_cache
from pathlib import Path

from difflab.annotators import CONTROL_TYPES
from difflab.commands import ASSETS
from difflab.errors import DifflabError
from difflab.pipelines.control import CONTROL_MODES, ControlUnit, control_map


def add_control_arguments(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("ControlNet (repeat --control for several; the other flags then take one value for all "
                             "or one per --control)")
    g.add_argument("--control", action="append", metavar="IMAGE", help="a control image (any size; made greyscale and "
                                                                       "resized to the model's size)")
    g.add_argument("--control-type", action="append", choices=(*CONTROL_TYPES, "none"),
                   help="the annotator applied to IMAGE (default: the control model's); none: IMAGE is the map")
    g.add_argument("--control-model", action="append", metavar="CKPT",
                   help="a ControlNet from `difflab train-controlnet` (default: the bundled one for --control-type, "
                        "e.g. silhouette)")
    g.add_argument("--control-scale", action="append", type=float, help="weight of its residuals (default 1; 0 is "
                                                                        "no control)")
    g.add_argument("--control-start", action="append", type=float, help="fraction of the steps where it starts "
                                                                        "(default 0)")
    g.add_argument("--control-end", action="append", type=float, help="fraction of the steps where it ends (default 1)")
    g.add_argument("--control-mode", choices=CONTROL_MODES, help="balanced (default), prompt (My prompt is more "
                   "important: soft weights 0.825^(R-1-i)) or controlnet (ControlNet is more important: soft weights, "
                   "control on CFG's conditional half only)")
    g.add_argument("--guess-mode", action="store_true", help="the original's guess mode: --control-mode controlnet, "
                                                              "for sampling without a prompt")


def per_unit(values: list | None, n: int, default, flag: str) -> list:
    if not values:
        return [default] * n
    if len(values) not in (1, n):
        raise DifflabError(f"{flag}: give one value for all or one per --control ({n}), got {len(values)}")
    return values * n if len(values) == 1 else values


def bundled_controlnet(kind: str | None, name: str) -> Path:
    """The bundled ControlNet for a control type (difflab/assets/controlnet_<type>), if there is one."""
    path = ASSETS / f"controlnet_{kind}" / "controlnet.safetensors"
    if kind is None or not path.is_file():
        bundled = sorted(p.name.removeprefix("controlnet_") for p in ASSETS.glob("controlnet_*"))
        raise DifflabError(f"{name}: give --control-model CKPT (a ControlNet from `difflab train-controlnet`), or "
                           f"--control-type with a bundled one ({', '.join(bundled) or 'none'})")
    return path


@lru_cache(maxsize=8)
def cached_controlnet(path: str):
    from difflab.train.controlnet import load_controlnet

    return load_controlnet(path)[0]


def controls_from_args(args: argparse.Namespace, image_size: tuple[int, int]) -> tuple[ControlUnit, ...]:
    """The ControlUnits the flags ask for, their images made maps at image_size (H, W)."""
    from PIL import Image, UnidentifiedImageError

    images = args.control or []
    control_flags = ("control_type", "control_model", "control_scale", "control_start", "control_end")
    if not images:
        given = [f"--{name.replace('_', '-')}" for name in control_flags if getattr(args, name)]
        if given or args.control_mode or args.guess_mode:
            raise DifflabError(f"{(given or ['--control-mode'])[0]} needs --control IMAGE")
        return ()
    if args.guess_mode and args.control_mode not in (None, "controlnet"):
        raise DifflabError("--guess-mode is --control-mode controlnet; drop one of them")
    n = len(images)
    models = per_unit(args.control_model, n, None, "--control-model")
    kinds = per_unit(args.control_type, n, None, "--control-type")
    scales = per_unit(args.control_scale, n, 1.0, "--control-scale")
    starts = per_unit(args.control_start, n, 0.0, "--control-start")
    ends = per_unit(args.control_end, n, 1.0, "--control-end")
    mode = "controlnet" if args.guess_mode else args.control_mode or "balanced"
    units = []
    for k, (image, model) in enumerate(zip(images, models)):
        name = "--control" if n == 1 else f"--control #{k + 1}"
        if model is None:
            model = bundled_controlnet(kinds[k], name)
        net = cached_controlnet(str(Path(model).resolve()))
        try:
            picture = Image.open(image)
        except (OSError, UnidentifiedImageError):
            raise DifflabError(f"{name}: cannot read {image!r} as an image") from None
        factor = 2 ** net.config.hint_downsample
        kind = kinds[k] or net.config.control
        units.append(ControlUnit(net, control_map(picture, kind, image_size[0] * factor, image_size[1] * factor),
                                 scales[k], starts[k], ends[k], mode, name))
    return tuple(units)
