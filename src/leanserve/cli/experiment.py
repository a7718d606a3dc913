"""``leanserve experiment start|status|stop|promote|rollback|feedback URL [NAME]``: a running server's experiments."""

from __future__ import annotations

import argparse
import json
import os
import tomllib
from pathlib import Path
from typing import Any

from ..errors import UsageError

ACTIONS = ("start", "status", "stop", "promote", "rollback", "feedback")


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "experiment",
        help="start, watch, stop, promote or roll back the experiments of a running server; send feedback",
        description="status without NAME lists the experiments. Start one from a TOML file (an "
        "[experiments.NAME] table, or the table's fields alone) and/or --mode and --arm.",
    )
    p.add_argument("action", choices=ACTIONS)
    p.add_argument("url", help="the server, e.g. http://127.0.0.1:8000")
    p.add_argument("name", nargs="?", help="the experiment (its alias)")
    p.add_argument("key", nargs="?", help="feedback: the response id or the unit")
    p.add_argument("--file", type=Path, default=None, help="start: a TOML file with the experiment's fields")
    p.add_argument("--mode", choices=["split", "shadow", "canary"], default=None, help="start: the mode")
    p.add_argument(
        "--arm",
        action="append",
        default=None,
        metavar="MODEL[:VERSION][=WEIGHT]",
        help="start: an arm (repeat; the first is the control); promote: the arm to promote",
    )
    p.add_argument(
        "--steps", default=None, help="start, canary: the candidate's percent at each step, e.g. 1,5,25,50,100"
    )
    p.add_argument("--reason", default=None, help="stop, promote, rollback: why, for the decision log")
    p.add_argument("--reward", type=float, default=1.0, help="feedback: the reward (default 1: a conversion)")
    p.add_argument("--admin-token", default=None, help="default: $LEANSERVE_ADMIN_TOKEN")
    p.add_argument("--token", default=None, help="feedback: the server's inference token, when it has one")
    p.add_argument("--json", action="store_true", help="status: print the JSON document")
    p.add_argument("--timeout", type=float, default=60.0, help="seconds to wait for the server")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ..client import ExperimentClient
    from ..server.auth import ADMIN_TOKEN_ENV

    admin = args.admin_token or os.environ.get(ADMIN_TOKEN_ENV) or None
    token = args.token if args.action == "feedback" else admin
    client = ExperimentClient(args.url, token=token, timeout=args.timeout)
    if args.action == "status" and not args.name:
        listed = client.list()
        if args.json:
            print(json.dumps(listed, indent=1))
        for e in [] if args.json else listed:
            step = f" at {e['share_percent']:g}%" if e["share_percent"] is not None else ""
            arms = ", ".join(a["label"] for a in e["arms"])
            print(f"{e['name']:24} {e['mode']:7} {e['phase']:12}{step}  {arms}")
        return 0
    if not args.name:
        raise UsageError(f"'leanserve experiment {args.action}' needs a NAME")
    if args.action == "feedback":
        if not args.key:
            raise UsageError("'leanserve experiment feedback' needs a KEY: the response id or the unit")
        client.feedback(args.name, args.key, args.reward)
        return 0
    if args.action == "start":
        status = client.start(args.name, _table(args))
    elif args.action == "stop":
        status = client.stop(args.name, args.reason)
    elif args.action == "rollback":
        status = client.rollback(args.name, args.reason)
    elif args.action == "promote":
        if args.arm and len(args.arm) > 1:
            raise UsageError("promote takes one --arm")
        status = client.promote(args.name, args.arm[0] if args.arm else None, args.reason)
    else:
        status = client.status(args.name)
    if args.json:
        print(json.dumps(status, indent=1))
    else:
        print_status(status)
    return 0


def _table(args: argparse.Namespace) -> dict[str, Any]:
    """The experiment's fields: the file's, then the flags'."""
    table: dict[str, Any] = {}
    if args.file is not None:
        try:
            doc = tomllib.loads(args.file.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as e:
            raise UsageError(f"cannot read {args.file}: {e}") from None
        named = doc.get("experiments", {})
        table = dict(named[args.name]) if isinstance(named, dict) and args.name in named else doc
    if args.mode is not None:
        table["mode"] = args.mode
    if args.arm:
        table["arms"] = [_arm(text) for text in args.arm]
    if args.steps is not None:
        try:
            table["steps"] = [float(s) for s in args.steps.split(",")]
        except ValueError:
            raise UsageError(f"--steps {args.steps!r}: comma-separated percentages, e.g. 1,5,25,50,100") from None
    if "mode" not in table or "arms" not in table:
        raise UsageError("start needs a mode and arms", hint="give --mode and --arm (twice or more), or --file")
    return table


def _arm(text: str) -> dict[str, Any]:
    """``model[:version][=weight]`` as an arms entry."""
    spec, _, weight = text.partition("=")
    model, _, version = spec.partition(":")
    arm: dict[str, Any] = {"model": model}
    try:
        if version and version != "default":
            arm["version"] = int(version)
        if weight:
            arm["weight"] = float(weight)
    except ValueError:
        raise UsageError(f"--arm {text!r}: expected MODEL[:VERSION][=WEIGHT], e.g. digits:2=10") from None
    if not model:
        raise UsageError(f"--arm {text!r}: no model")
    return arm


def print_status(status: dict[str, Any]) -> None:
    """An experiment's status as a few lines of text."""
    where = f", step {status['step'] + 1} ({status['share_percent']:g}%)" if status.get("step") is not None else ""
    print(f"{status['name']}: {status['mode']}, {status['phase']}{where}; primary metric {status['primary_metric']}")
    print(f"{'arm':24} {'role':9} {'share':>6} {'requests':>9} {'error rate':>22} {'p50 ms':>8} {'p99 ms':>8}")
    for arm in status["arms"]:
        rate = _interval(arm["error_rate"], 1.0, ".2%")
        p50, p99 = (_ms(arm["latency_s"][q]["estimate"]) for q in ("p50", "p99"))
        print(
            f"{arm['label']:24} {arm['role']:9} {arm['share']:>6.1%} {arm['requests']:>9} {rate:>22} {p50:>8} {p99:>8}"
        )
    shadow = status.get("shadow")
    if shadow:
        agreement = _interval(shadow["agreement"], 1.0, ".1%")
        print(f"shadow: {shadow['compared']} compared, agreement {agreement}; {shadow['shed']} copies shed")
    srm = status.get("srm")
    if srm:
        print(
            f"sample ratio: p = {_number(srm['p_value'])} (sequential {_number(srm['sequential_p'])})"
            f"{', ALARM' if srm['alarm'] else ''}"
        )
    for c in status.get("checks", []):
        interval = _interval(c, 1.0, ".4g")
        print(
            f"  {c['role']} {c['name']} (arm {c['arm']}): {interval}, harmful {c['harmful_side']} {c['bound']:g}, "
            f"harm p = {_number(c['harm_p'])}"
        )
    decision = status.get("decision")
    if decision:
        print(f"decision: {decision['action']} ({decision['reason']})")
    for d in status.get("decisions", [])[-5:]:
        print(f"  log: {d['action']} - {d['reason']}")


def _interval(d: dict[str, Any], scale: float, spec: str) -> str:
    def f(x: Any) -> str:
        return format(x * scale, spec) if isinstance(x, int | float) else str(x)

    return f"{f(d['estimate'])} [{f(d['lower'])}, {f(d['upper'])}]" if d.get("estimate") is not None else "-"


def _ms(seconds: Any) -> str:
    return f"{seconds * 1e3:.2f}" if isinstance(seconds, int | float) else "-"


def _number(x: Any) -> str:
    return f"{x:.3g}" if isinstance(x, int | float) else str(x)
