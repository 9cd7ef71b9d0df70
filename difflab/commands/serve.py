"""`difflab serve`: the web page and an AUTOMATIC1111-compatible HTTP API over one checkpoint (the bundled
conditional Fashion-MNIST model by default), on loopback unless --host says otherwise."""

from __future__ import annotations

import argparse
import ipaddress
import sys

from difflab.commands import BUNDLED_CONDITIONAL_MODEL, positive_int, set_threads
from difflab.errors import DifflabError


def register(subparsers) -> None:
    p = subparsers.add_parser("serve", help="web page and HTTP API (AUTOMATIC1111-compatible)", description=__doc__)
    p.add_argument("checkpoint", nargs="?", help="a .safetensors checkpoint or a .json model manifest (default: the "
                                                 "bundled class- and text-conditional model)")
    p.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1, this machine only)")
    p.add_argument("--port", type=positive_int("--port"), default=7860, help="TCP port (default 7860)")
    p.add_argument("--api-auth", metavar="USER:PASS", help="require HTTP basic auth for the API and the page")
    p.add_argument("--queue-size", type=int, default=4,
                   help="requests that may wait behind the running one; more get 503 (default 4)")
    p.add_argument("--threads", type=int, help="CPU threads for torch")
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

    from difflab.serve.app import create_app
    from difflab.serve.model import load_served_model

    set_threads(args.threads)
    auth = parse_auth(args.api_auth)
    if args.port > 65535:
        raise DifflabError(f"--port must lie in 1..65535, got {args.port}")
    if args.queue_size < 0:
        raise DifflabError(f"--queue-size must be >= 0, got {args.queue_size}")
    model = load_served_model(args.checkpoint or BUNDLED_CONDITIONAL_MODEL)
    if not is_loopback(args.host) and auth is None:
        print(f"difflab serve: warning: listening on {args.host} without --api-auth; anyone who can reach it can "
              f"use it", file=sys.stderr)
    print(f"serving {model.name} ({model.width}x{model.height}) on http://{args.host}:{args.port}/ "
          f"(API docs at /docs)", flush=True)
    uvicorn.run(create_app(model, auth=auth, queue_size=args.queue_size), host=args.host, port=args.port,
                log_level="warning")
    return 0
