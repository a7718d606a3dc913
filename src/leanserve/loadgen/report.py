"""A run's report: a text table, JSON (one object), CSV, and a latency-by-percentile chart."""

from __future__ import annotations

import csv
import io
import json
import math
from pathlib import Path

from .results import Report, Result

CSV_FIELDS = (
    "model",
    "concurrency",
    "rate",
    "arrivals",
    "duration_s",
    "requests",
    "throughput",
    "p50_ms",
    "p90_ms",
    "p99_ms",
    "p999_ms",
    "max_ms",
    "errors",
    "client_cpu",
    "client_saturated",
    "windows",
    "stable",
    "throughput_ci_lo",
    "throughput_ci_hi",
    "p99_ci_lo_ms",
    "p99_ci_hi_ms",
)


def _ms(value: float) -> str:
    if math.isnan(value):
        return "-"
    return f"{value:.3f}" if value < 10 else f"{value:.1f}"


def table(report: Report) -> str:
    head = (
        f"{'model':16} {'load':>10} {'req/s':>10} {'95% CI':>17} {'p50 ms':>8} {'p90 ms':>8} {'p99 ms':>8}"
        f" {'p99.9 ms':>9} {'max ms':>8} {'errors':>7} {'client':>6} {'windows':>8}"
    )
    lines = [head]
    for r in report.results:
        lo, hi = r.throughput_ci
        ci = f"{lo:,.0f}-{hi:,.0f}" if not math.isnan(lo) else "-"
        windows = f"{r.windows}{'' if r.stable else ' !'}"
        lines.append(
            f"{r.model[:16]:16} {r.label:>10} {r.throughput:>10,.0f} {ci:>17} {_ms(r.p50_ms):>8} {_ms(r.p90_ms):>8}"
            f" {_ms(r.p99_ms):>8} {_ms(r.p999_ms):>9} {_ms(r.max_ms):>8} {sum(r.errors.values()):>7}"
            f" {r.client_cpu:>6.0%} {windows:>8}"
        )
    if any(not r.stable for r in report.results):
        lines.append("windows marked ! did not stabilize (the last three differ by over 10%)")
    if report.slo is not None:
        slo = report.slo
        if slo.rate is None:
            lines.append(f"SLO p99 <= {slo.target_p99_ms:g} ms: no rate tried met it")
        else:
            assert slo.result is not None
            lines.append(
                f"SLO p99 <= {slo.target_p99_ms:g} ms: highest rate {slo.rate:,.0f} req/s"
                f" (p99 {_ms(slo.result.p99_ms)} ms, {len(slo.tried)} rates tried)"
            )
    return "\n".join(lines)


def to_json(report: Report) -> str:
    return json.dumps(report.as_dict(), indent=1)


def _row(r: Result) -> list[object]:
    return [
        r.model,
        r.concurrency if r.concurrency is not None else "",
        r.rate if r.rate is not None else "",
        r.arrivals or "",
        round(r.duration_s, 3),
        r.requests,
        round(r.throughput, 2),
        *(round(x, 4) for x in (r.p50_ms, r.p90_ms, r.p99_ms, r.p999_ms, r.max_ms)),
        ";".join(f"{k}={v}" for k, v in r.errors.items()),
        round(r.client_cpu, 3),
        r.client_saturated,
        r.windows,
        r.stable,
        *(round(x, 2) for x in r.throughput_ci),
        *(round(x, 4) for x in r.p99_ci_ms),
    ]


def to_csv(report: Report) -> str:
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(CSV_FIELDS)
    for r in report.results:
        writer.writerow(_row(r))
    return out.getvalue()


def plot(report: Report, path: Path) -> list[Path] | str:
    """A latency-by-percentile chart (HdrHistogram's axes) as ``path``.png and .svg; or why not."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return "--plot needs matplotlib (pip install matplotlib): no chart written"
    fig, ax = plt.subplots(figsize=(8, 4.5))
    for r in report.results:
        xs = [1 / (1 - p / 100) for p in (50.0, 90.0, 99.0, 99.9)]
        ys = [r.p50_ms, r.p90_ms, r.p99_ms, r.p999_ms]
        ax.plot(xs, ys, marker="o", label=f"{r.model} {r.label}: {r.throughput:,.0f} req/s")
    ax.set_xscale("log")
    ax.set_xticks([2, 10, 100, 1000], ["p50", "p90", "p99", "p99.9"])
    ax.set_ylabel("latency, ms")
    ax.set_title(f"leanserve bench {report.url}")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    written = []
    for suffix in (".png", ".svg"):
        target = path.with_suffix(suffix)
        fig.savefig(target)
        written.append(target)
    plt.close(fig)
    return written
