"""``leanserve serve REPO``: serve a model repository over the Open Inference Protocol."""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

from ..errors import UsageError


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("serve", help="serve a model repository over HTTP (KServe V2 / Triton protocol)")
    p.add_argument("repository", type=Path, help="the model repository: <repo>/<model>/<version>/model.onnx")
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (default: %(default)s)")
    p.add_argument("--port", type=int, default=8000, help="port to listen on (default: %(default)s)")
    p.add_argument("--max-body-bytes", type=int, default=None, help="largest request body accepted (default: 64 MiB)")
    p.add_argument("--log-level", default="info", choices=["debug", "info", "warning", "error"])
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ..protocol import Limits
    from ..server import serve

    if not args.repository.is_dir():
        raise UsageError(f"{args.repository} is not a directory", hint="pass a model repository folder")
    logging.basicConfig(level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    limits = Limits() if args.max_body_bytes is None else Limits(max_body_bytes=args.max_body_bytes)
    serve(args.repository, host=args.host, port=args.port, limits=limits)
    return 0
