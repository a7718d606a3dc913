"""The ``leanserve`` command: a thin shell over the library.

Each sub-command lives in its own module exposing ``register(subparsers)``, which adds its
parser and sets ``func`` to a ``run(args) -> int`` function. Commands parse, call the library,
print and return an exit code; exceptions become exit codes here, in one place.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

from ..errors import LeanserveError

# Sub-command modules, imported only when the command line names them would save start-up
# time, but argparse needs every parser to print help; the modules import their heavy
# dependencies lazily inside ``run`` instead.
_COMMANDS = ("serve", "models", "experiment", "check", "demo", "optimize", "bench", "deploy")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="leanserve",
        description="Optimize a model, serve it over the Open Inference Protocol, measure it.",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name in _COMMANDS:
        module = importlib.import_module(f"{__name__}.{name}")
        module.register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        code: int = args.func(args)
        return code
    except LeanserveError as e:
        print(f"error: {e.message}", file=sys.stderr)
        if e.hint:
            print(f"hint: {e.hint}", file=sys.stderr)
        return e.exit_code
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
