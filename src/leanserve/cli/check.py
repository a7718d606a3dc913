"""``leanserve check REPO``: validate a repository without serving it."""

from __future__ import annotations

import argparse
import json
from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from ..check import VersionCheck


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("check", help="validate a model repository: configs, signatures, load, warm-up inference")
    p.add_argument("repository", type=Path)
    p.add_argument("--json", action="store_true", help="print the results as JSON")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from rich.console import Console
    from rich.table import Table

    from ..check import check_repository

    report = check_repository(args.repository)
    if args.json:
        print(json.dumps({"ok": report.ok, "results": [asdict(r) for r in report.results]}, indent=1))
        return 0 if report.ok else 1
    console = Console()
    table = Table(title=f"leanserve check {args.repository}")
    for column in ("model", "version", "inputs", "outputs", "load s", "smoke ms", "status"):
        table.add_column(column)
    for r in report.results:
        table.add_row(
            r.model,
            "" if r.version is None else str(r.version),
            r.inputs,
            r.outputs,
            f"{r.load_seconds:.3f}" if r.ok else "",
            f"{r.smoke_latency_ms:.2f}" if r.ok and r.smoke_latency_ms > 0 else "",  # 0: the synthetic input failed
            _status(r),
        )
    console.print(table)
    for r in report.results:
        where = r.model if r.version is None else f"{r.model} version {r.version}"
        if not r.ok:
            console.print(f"[red]error[/red] {where}: {r.error}", highlight=False)
        for warning in r.warnings:
            console.print(f"[yellow]warning[/yellow] {where}: {warning}", highlight=False)
    # Warnings do not fail the check: the version serves, the message says what to look at.
    return 0 if report.ok else 1


def _status(r: VersionCheck) -> str:
    if not r.ok:
        return "[red]FAILED[/red]"
    if r.warnings:
        return f"[yellow]ok, {len(r.warnings)} warning{'s' if len(r.warnings) > 1 else ''}[/yellow]"
    return "[green]ok[/green]"
