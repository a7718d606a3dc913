"""``leanserve optimize MODEL``: build lean variants, guard their accuracy, serve the best.

leanserve optimize model.onnx --data eval.npz --labels labels --budget 1% --repo ./models --name digits
leanserve optimize model.pt2 --data eval.npz --metric cosine --budget 0.99 --repo ./models --name minilm
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from ..optimization import OptimizeResult, VariantResult


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    # Importing leanserve has loaded the optimizer already: its objectives cost nothing here,
    # and the command cannot drift from the library's default.
    from ..optimization.sweep import DEFAULT_OBJECTIVE, OBJECTIVES

    p = sub.add_parser(
        "optimize",
        help="build optimized variants, reject those outside an accuracy budget, serve the fastest",
        description="Build optimized variants of MODEL (ONNX Runtime int8/fp32, OpenVINO), judge each on "
        "held-out data against an accuracy budget, measure them, and write the fastest variant inside "
        "the budget (and the original) into a model repository, with report.html and report.json.",
    )
    # MODEL, --data and --repo are checked in run(), so that --list-variants works alone.
    p.add_argument("model", type=Path, nargs="?", help="an .onnx file or a torch.export program (.pt2)")
    p.add_argument("--data", type=Path, help=".npz with one array per model input, or a folder (required)")
    p.add_argument("--labels", default=None, help="name of the array in --data holding the labels")
    p.add_argument(
        "--groups",
        default=None,
        help="name of the array in --data holding a group per example (e.g. language): "
        "the metric is also reported per group",
    )
    p.add_argument(
        "--metric",
        default="auto",
        help="accuracy, top1, cosine, iou, mae, max_error, or module:function "
        "(default: accuracy with --labels, else top1)",
    )
    p.add_argument(
        "--budget",
        default=None,
        help="'1%%': at most 1 point below the original (accuracy, top1); '0.99': a floor (cosine); "
        "an error ceiling for mae / max_error (default: 1%% for accuracy, top1 and iou, 0.99 for cosine)",
    )
    p.add_argument("--worst", default=None, help="cosine only: a floor on the worst single example")
    p.add_argument("--repo", type=Path, help="the model repository to write versions into (required)")
    p.add_argument("--name", default=None, help="the model's name in the repository (default: file stem)")
    p.add_argument("--output", default=None, help="the output tensor the metric reads (default: the first)")
    p.add_argument(
        "--variants",
        default=None,
        help="comma-separated variants to try (default: all but entropy calibration); see --list-variants",
    )
    p.add_argument("--list-variants", action="store_true", help="print the known variants and exit")
    p.add_argument("--quick", action="store_true", help="fewer variants, shorter measurements, smaller sweep")
    p.add_argument(
        "--objective",
        choices=OBJECTIVES,
        default=DEFAULT_OBJECTIVE,
        help="what 'fastest' means: batch-1 p50 latency or best throughput (default: %(default)s)",
    )
    p.add_argument(
        "--calibration-fraction",
        type=float,
        default=0.25,
        help="share of the data used to calibrate; the rest judges (default: %(default)s)",
    )
    p.add_argument("--seed", type=int, default=0, help="seed of the calibration / evaluation split")
    p.add_argument("--no-fallback", action="store_true", help="skip the keep-nodes-in-float search")
    p.add_argument(
        "--requests",
        type=Path,
        default=None,
        help="requests as clients send them (an .npz with one array per input of the model's [handler], or a "
        "folder of files, one request each): latency and throughput are timed end to end through "
        "<repo>/<name>/handler.py",
    )
    p.add_argument("--json", action="store_true", help="print the machine-readable summary on stdout")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from rich.console import Console

    from ..errors import UsageError
    from ..optimization import CATALOG, optimize

    if args.list_variants:
        for name, spec in CATALOG.items():
            print(f"{name:32s} {spec.platform:12s} {spec.method}")
        return 0
    missing = [
        what for what, value in (("MODEL", args.model), ("--data", args.data), ("--repo", args.repo)) if not value
    ]
    if missing:
        raise UsageError(
            f"leanserve optimize needs {', '.join(missing)}",
            hint="e.g. leanserve optimize model.onnx --data eval.npz --repo ./models",
        )
    err = Console(stderr=True)
    variants = [v.strip() for v in args.variants.split(",") if v.strip()] if args.variants else None
    with err.status("optimizing", spinner="dots") as status:

        def progress(message: str) -> None:
            status.update(message)
            err.log(message)

        result = optimize(
            args.model,
            data=args.data,
            repo=args.repo,
            name=args.name,
            metric=args.metric,
            budget=args.budget,
            worst=args.worst,
            labels=args.labels,
            groups=args.groups,
            output=args.output,
            variants=variants,
            quick=args.quick,
            objective=args.objective,
            calibration_fraction=args.calibration_fraction,
            seed=args.seed,
            fallback=not args.no_fallback,
            requests=args.requests,
            progress=progress,
        )
    if args.json:
        json.dump(result.to_dict(), sys.stdout, indent=2, default=str)
        sys.stdout.write("\n")
    else:
        _print_summary(result)
    return 0


def _worst_group(v: VariantResult, higher_is_better: bool) -> str:
    from ..optimization.metrics import worst_group

    name = worst_group(v.score, higher_is_better) if v.score else None
    return "—" if name is None or v.score is None else f"{name} {v.score.groups[name].value:.4f}"


def _print_summary(result: OptimizeResult) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"{result.model}: {result.metric}, budget {result.budget}")
    for column in (
        "variant",
        "status",
        result.metric,
        "p50 ms (b1)",
        "speed-up",
        "throughput/s",
        "file MiB",
        "version",
    ):
        table.add_column(column)
    show_groups = result.original.score is not None and bool(result.original.score.groups)
    if show_groups:
        table.add_column("worst group")
    for v in [result.original, *result.variants]:
        m = v.measurements
        extra = [_worst_group(v, result.higher_is_better)] if show_groups else []
        table.add_row(
            v.name + (" *" if v.name == result.chosen else ""),
            v.status,
            f"{v.score.value:.4f}" if v.score else "—",
            f"{m.latency.p50_ms:.3f}" if m else "—",
            f"{v.speedup:.2f}x" if v.speedup else "—",
            f"{m.throughput:,.0f} (b{m.throughput_batch})" if m else "—",
            f"{m.file_size_bytes / 2**20:.2f}" if m else "—",
            str(v.version) if v.version is not None else "—",
            *extra,
        )
    out = Console()
    if not out.is_terminal:
        out = Console(width=160)  # piped output: keep the variant names whole
    out.print(table)
    out.print(result.message)
    out.print(f"default_version = {result.default_version}; report: {result.report_html}")
