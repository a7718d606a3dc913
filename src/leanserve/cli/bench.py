"""``leanserve bench URL --model M``: load a running server, print throughput and latency percentiles."""

from __future__ import annotations

import argparse
import re
import sys
from collections.abc import Callable
from pathlib import Path

from ..errors import UsageError

_UNITS = {"us": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0, "": 1.0}


def seconds(text: str) -> float:
    """``20s``, ``500ms``, ``2m``, ``250us`` or a bare number of seconds."""
    match = re.fullmatch(r"\s*([0-9]*\.?[0-9]+)\s*(us|ms|s|m|)\s*", text)
    if match is None:
        raise argparse.ArgumentTypeError(f"{text!r} is not a duration (e.g. 20s, 500ms, 2m)")
    return float(match.group(1)) * _UNITS[match.group(2)]


def milliseconds(text: str) -> float:
    """``5ms``, ``500us``, ``0.2s``; a bare number is milliseconds."""
    bare = re.fullmatch(r"\s*([0-9]*\.?[0-9]+)\s*", text)
    return float(bare.group(1)) if bare else seconds(text) * 1e3


def _list(kind: type[int] | type[float]) -> Callable[[str], list[float] | list[int]]:
    def parse(text: str) -> list[float] | list[int]:
        try:
            return [kind(x) for x in text.split(",") if x.strip()]
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a comma-separated list of numbers") from None

    return parse


def _header(text: str) -> tuple[str, str]:
    name, sep, value = text.partition(":")
    if not sep or not name.strip():
        raise argparse.ArgumentTypeError(f"{text!r} is not a header (Name: value)")
    return name.strip(), value.strip()


def _input(text: str) -> object:
    from ..loadgen.inputs import parse_spec

    try:
        return parse_spec(text)
    except UsageError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "bench",
        help="load a running server: throughput, latency percentiles, errors, the client's CPU",
        description="Closed loop (--concurrency) or open loop (--rate) against a running server's "
        "inference endpoint; a model, an experiment alias or a mix of models.",
    )
    p.add_argument("url", help="the server, e.g. http://127.0.0.1:8000")
    p.add_argument("--model", help="the model (or experiment alias) to load")
    p.add_argument("--models", type=lambda s: [m for m in s.split(",") if m], help="several models: a,b,c")
    p.add_argument("--mix", default=None, help="shares of --models: zipf:1.1, weights:5,3,2 (default: equal)")
    p.add_argument("--version", default=None, help="a model version (default: the server's choice)")
    load = p.add_mutually_exclusive_group()
    load.add_argument("--concurrency", type=_list(int), help="closed loop: connections, e.g. 1,8,32 (default 1)")
    load.add_argument("--rate", type=_list(float), help="open loop: requests per second, e.g. 200 or 100,200")
    p.add_argument("--arrivals", choices=["poisson", "constant"], default="poisson", help="open loop's arrivals")
    p.add_argument(
        "--duration",
        type=seconds,
        default=20.0,
        help="measured time per level (default 20s; up to twice that while the windows disagree)",
    )
    p.add_argument("--warmup", type=seconds, default=2.0, help="load before measuring, per level (default 2s)")
    p.add_argument("--window", type=seconds, default=None, help="measurement window (default: duration/4)")
    p.add_argument("--max-windows", type=int, default=None, help="give up on stability after this many windows")
    p.add_argument("--binary", action="store_true", help="binary tensors (the protocol's binary extension)")
    p.add_argument("--data", default=None, help="inputs: an .npz keyed by input name, or 'demo' (default: random)")
    p.add_argument(
        "--inputs",
        type=_input,
        action="append",
        default=None,
        help="declare an input, name:DATATYPE:dims (e.g. x:FP32:-1,64), for a server without model metadata",
    )
    p.add_argument("--slo-p99", type=milliseconds, default=None, help="find the highest rate with p99 under this")
    p.add_argument("--header", "-H", type=_header, action="append", default=[], help="extra header 'Name: value'")
    p.add_argument("--timeout", type=seconds, default=30.0, help="a request older than this counts as an error")
    p.add_argument("--max-connections", type=int, default=1024, help="open loop: connections at most")
    p.add_argument("--seed", type=int, default=0, help="seed of the random inputs, arrivals and mix")
    p.add_argument("--json", action="store_true", help="print one JSON object on stdout instead of the table")
    p.add_argument("--csv", type=Path, default=None, help="also write the results as CSV to this file")
    p.add_argument("--plot", type=Path, default=None, help="also write a latency chart: FILE.png and FILE.svg")
    p.add_argument("--quiet", action="store_true", help="no progress on stderr")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ..loadgen import run as bench
    from ..loadgen.report import plot, table, to_csv, to_json

    if bool(args.model) == bool(args.models):
        raise UsageError("name the load's target: --model M, or --models a,b,c")
    models = args.models or [args.model]
    if args.mix and len(models) < 2:
        raise UsageError("--mix needs several --models")
    tty = sys.stderr.isatty()

    def progress(line: str) -> None:
        if line.startswith("\r"):  # an update within a window: only where it can be overwritten
            if tty:
                print(line, end="", file=sys.stderr, flush=True)
            return
        print(("\r\033[K" if tty else "") + line, file=sys.stderr, flush=True)

    report = bench(
        args.url,
        models,
        version=args.version,
        concurrency=args.concurrency,
        rate=args.rate,
        arrivals=args.arrivals,
        duration_s=args.duration,
        warmup_s=args.warmup,
        window_s=args.window,
        max_windows=args.max_windows,
        binary=args.binary,
        data=args.data,
        mix=args.mix,
        slo_p99_ms=args.slo_p99,
        headers=dict(args.header),
        timeout_s=args.timeout,
        max_connections=args.max_connections,
        seed=args.seed,
        inputs=args.inputs,
        progress=None if args.quiet else progress,
    )
    if args.json:
        print(to_json(report))
    else:
        print(table(report))
    for warning in report.warnings:
        print(f"warning: {warning}", file=sys.stderr)
    if args.csv is not None:
        args.csv.parent.mkdir(parents=True, exist_ok=True)
        args.csv.write_text(to_csv(report))
    if args.plot is not None:
        written = plot(report, args.plot)
        if isinstance(written, str):
            print(f"warning: {written}", file=sys.stderr)
        else:
            print(f"chart: {', '.join(str(p) for p in written)}", file=sys.stderr)
    return 0
