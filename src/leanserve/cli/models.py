"""``leanserve models list|load|unload URL [MODEL]``: Triton's model repository extension from the shell."""

from __future__ import annotations

import argparse
import json
import os
import sys

from ..errors import UsageError


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("models", help="list, load or unload the models of a running server")
    p.add_argument("action", choices=["list", "load", "unload"])
    p.add_argument("url", help="the server, e.g. http://127.0.0.1:8000")
    p.add_argument("model", nargs="?", help="the model to load or unload")
    p.add_argument("--admin-token", default=None, help="default: $LEANSERVE_ADMIN_TOKEN")
    p.add_argument("--json", action="store_true", help="print the index as JSON")
    p.add_argument("--timeout", type=float, default=300.0, help="seconds to wait for the server (a load can be slow)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ..client import RepositoryClient
    from ..memory import format_size
    from ..server.auth import ADMIN_TOKEN_ENV

    token = args.admin_token or os.environ.get(ADMIN_TOKEN_ENV) or None
    client = RepositoryClient(args.url, token=token, timeout=args.timeout)
    if args.action == "list":
        index = client.index()
        if args.json:
            print(json.dumps(index, indent=1))
            return 0
        print(f"{'model':24} {'version':>7} {'state':12} {'load':10} {'memory':>10}  reason")
        for e in index:
            memory = format_size(e["memory_bytes"]) if e.get("memory_bytes") else "-"
            print(
                f"{e['name']:24} {e['version']:>7} {e['state']:12} {e.get('load', ''):10} {memory:>10}  {e['reason']}"
            )
        return 0
    if not args.model:
        raise UsageError(f"'leanserve models {args.action}' needs a MODEL")
    if args.action == "load":
        client.load(args.model)
    else:
        client.unload(args.model)
    print(f"{args.model}: {args.action}ed", file=sys.stderr)
    return 0
