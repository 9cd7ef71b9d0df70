"""`difflab serve`: the web page and an AUTOMATIC1111-compatible HTTP API over a checkpoint (the bundled
conditional Fashion-MNIST model by default), the others in --models-dir and the bundled ones, on loopback unless
--host says otherwise."""

from __future__ import annotations

import argparse
import ipaddress
import sys
from pathlib import Path

from difflab.commands import (BUNDLED_CONDITIONAL_MODEL, BUNDLED_LATENT_MODEL, BUNDLED_MODEL, model_file, positive_int,
                              set_threads)
from difflab.errors import DifflabError
from difflab.precision import SAMPLING_PRECISIONS


def register(subparsers) -> None:
    p = subparsers.add_parser("serve", help="web page and HTTP API (AUTOMATIC1111-compatible)", description=__doc__)
    p.add_argument("checkpoint", nargs="?", help="a .safetensors checkpoint, a .json model manifest or 'latent' "
                                                 "(default: the bundled class- and text-conditional model)")
    p.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1, this machine only)")
    p.add_argument("--port", type=positive_int("--port"), default=7860, help="TCP port (default 7860)")
    p.add_argument("--api-auth", metavar="USER:PASS", help="require HTTP basic auth for the API and the page")
    p.add_argument("--queue-size", type=int, default=4,
                   help="requests that may wait behind the running one; more get 503 (default 4)")
    p.add_argument("--models-dir", metavar="DIR",
                   help="also offer every *.safetensors checkpoint below DIR (GET /sdapi/v1/sd-models; switch with "
                        "POST /sdapi/v1/options)")
    p.add_argument("--lora-dir", metavar="DIR",
                   help="LoRAs a prompt may name as <lora:NAME:MULTIPLIER> (every *.safetensors below DIR; GET "
                        "/sdapi/v1/loras)")
    p.add_argument("--embeddings-dir", metavar="DIR",
                   help="textual-inversion embeddings loaded at start; a prompt uses one by its token (GET "
                        "/sdapi/v1/embeddings)")
    p.add_argument("--controlnet-dir", metavar="DIR",
                   help="ControlNets (from `difflab train-controlnet`) below DIR for alwayson_scripts.controlnet "
                        "(GET /controlnet/model_list)")
    p.add_argument("--upscaler-dir", metavar="DIR",
                   help="super-resolution models (every *.safetensors below DIR trained with train.low_res, e.g. "
                        "by configs/fashion_mnist_sr.json) that hr_upscaler may name, in the hires fix (enable_hr) "
                        "or to another width x height (GET /sdapi/v1/upscalers)")
    p.add_argument("--strict-names", action="store_true",
                   help="refuse unknown sampler, scheduler and upscaler names with 422 instead of falling back to "
                        "the default with a warning (the web UI falls back)")
    p.add_argument("--threads", type=int, help="CPU threads for torch")
    p.add_argument("--precision", choices=SAMPLING_PRECISIONS, default="fp32",
                   help="bf16: every request's network under bf16 autocast (about 2x the speed on a CPU with AMX "
                        "at the same FD); default fp32")
    p.set_defaults(handler=run)


def parse_auth(text: str | None) -> tuple[str, str] | None:
    if text is None:
        return None
    user, sep, password = text.partition(":")
    if not sep or not user or not password:
        raise DifflabError(f"--api-auth must be USER:PASS with both parts non-empty, got {text!r}")
    return user, password


def is_loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return host == "localhost"


def run(args: argparse.Namespace) -> int:
    import uvicorn

    from difflab.serve.adapters import Adapters
    from difflab.serve.app import create_app
    from difflab.serve.catalog import Catalog
    from difflab.serve.controlnet import ControlNetCatalog
    from difflab.serve.model import load_served_model
    from difflab.serve.upscalers import UpscalerCatalog

    set_threads(args.threads)
    auth = parse_auth(args.api_auth)
    if args.port > 65535:
        raise DifflabError(f"--port must lie in 1..65535, got {args.port}")
    if args.queue_size < 0:
        raise DifflabError(f"--queue-size must be >= 0, got {args.queue_size}")
    models_dir = Path(args.models_dir) if args.models_dir else None
    if models_dir is not None and not models_dir.is_dir():
        raise DifflabError(f"--models-dir must be a folder, got {args.models_dir!r}")
    folders = {name: Path(getattr(args, name)) for name in ("lora_dir", "embeddings_dir", "controlnet_dir",
                                                            "upscaler_dir")
               if getattr(args, name)}
    for name, folder in folders.items():
        if not folder.is_dir():
            raise DifflabError(f"--{name.replace('_', '-')} must be a folder, got {str(folder)!r}")
    model = load_served_model(model_file(args.checkpoint, BUNDLED_CONDITIONAL_MODEL))
    adapters = Adapters(folders.get("lora_dir"), folders.get("embeddings_dir"))
    catalog = Catalog(model, models_dir, (BUNDLED_CONDITIONAL_MODEL, BUNDLED_MODEL, BUNDLED_LATENT_MODEL))
    flags = {name: value for name, value in vars(args).items() if name not in ("handler", "api_auth")}
    if not is_loopback(args.host) and auth is None:
        print(f"difflab serve: warning: listening on {args.host} without --api-auth; anyone who can reach it can "
              f"use it", file=sys.stderr)
    print(f"serving {model.name} ({model.width}x{model.height}) and {len(catalog.checkpoints) - 1} other "
          f"checkpoint(s) on http://{args.host}:{args.port}/ (API docs at /docs)", flush=True)
    app = create_app(model, auth=auth, queue_size=args.queue_size, catalog=catalog, strict_names=args.strict_names,
                     flags=flags, adapters=adapters,
                     controlnets=ControlNetCatalog.with_bundled(folders.get("controlnet_dir")),
                     upscalers=UpscalerCatalog(folders.get("upscaler_dir")), precision=args.precision)
    uvicorn.run(app, host=args.host, port=args.port, log_level="warning")
    return 0
