"""report.json and report.html: every variant with its measured figures and its verdict.

The HTML page is self-contained (inline CSS and SVG, no scripts, nothing fetched), so it can be
mailed or archived beside the model.
"""

from __future__ import annotations

import html
import json
import math
from collections.abc import Sequence
from pathlib import Path

from .metrics import worst_group
from .results import OptimizeResult, VariantResult

_COLORS = {"chosen": "#1b7f3b", "accepted": "#2f6fb3", "rejected": "#c0392b", "original": "#444444"}


def write_json(result: OptimizeResult, path: Path) -> None:
    path.write_text(json.dumps(result.to_dict(), indent=2, allow_nan=False, default=str) + "\n", encoding="utf-8")


def _all(result: OptimizeResult) -> list[VariantResult]:
    return [result.original, *result.variants]


def _role(result: OptimizeResult, v: VariantResult) -> str:
    if v.name == result.chosen:
        return "chosen"
    if v.name == "original":
        return "original"
    return "accepted" if v.status == "accepted" else "rejected"


def _fmt(value: float | None, digits: int = 3) -> str:
    return "—" if value is None or not math.isfinite(value) else f"{value:.{digits}f}"


def tradeoff_svg(result: OptimizeResult, width: int = 560, height: int = 320) -> str:
    """Scatter: batch-1 p50 latency (x) against the metric (y), one dot per measured variant."""
    points = [
        (v, v.measurements.latency.p50_ms, v.score.value)
        for v in _all(result)
        if v.measurements is not None and v.score is not None
    ]
    if not points:
        return "<p>No variant was measured.</p>"
    pad = 48
    xs, ys = [p[1] for p in points], [p[2] for p in points]
    x0, x1 = 0.0, max(xs) * 1.1
    y0, y1 = min(ys), max(ys)
    if y1 - y0 < 1e-9:
        y0, y1 = y0 - 0.01, y1 + 0.01
    y0, y1 = y0 - (y1 - y0) * 0.1, y1 + (y1 - y0) * 0.1

    def sx(x: float) -> float:
        return pad + (x - x0) / (x1 - x0) * (width - 2 * pad)

    def sy(y: float) -> float:
        return height - pad - (y - y0) / (y1 - y0) * (height - 2 * pad)

    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" role="img" '
        f'aria-label="latency against {html.escape(result.metric)}">',
        f'<line x1="{pad}" y1="{height - pad}" x2="{width - pad}" y2="{height - pad}" stroke="#888"/>',
        f'<line x1="{pad}" y1="{pad}" x2="{pad}" y2="{height - pad}" stroke="#888"/>',
        f'<text x="{width / 2}" y="{height - 10}" text-anchor="middle" font-size="12">'
        f"p50 latency at batch 1 (ms)</text>",
        f'<text x="14" y="{height / 2}" text-anchor="middle" font-size="12" '
        f'transform="rotate(-90 14 {height / 2})">{html.escape(result.metric)}</text>',
    ]
    for tick in (x0, (x0 + x1) / 2, x1):
        parts.append(
            f'<text x="{sx(tick):.1f}" y="{height - pad + 14}" text-anchor="middle" font-size="10">{tick:.2f}</text>'
        )
    for tick in (y0, (y0 + y1) / 2, y1):
        parts.append(f'<text x="{pad - 4}" y="{sy(tick):.1f}" text-anchor="end" font-size="10">{tick:.3f}</text>')
    for v, x, y in points:
        color = _COLORS[_role(result, v)]
        parts.append(
            f'<circle cx="{sx(x):.1f}" cy="{sy(y):.1f}" r="5" fill="{color}">'
            f"<title>{html.escape(v.name)}: {x:.3f} ms, {y:.4f}</title></circle>"
        )
        parts.append(f'<text x="{sx(x) + 7:.1f}" y="{sy(y) - 6:.1f}" font-size="10">{html.escape(v.name)}</text>')
    parts.append("</svg>")
    return "".join(parts)


def throughput_svg(result: OptimizeResult, width: int = 560) -> str:
    """Horizontal bars: inferences per second at each variant's best batch size."""
    rows = [
        (v, v.measurements.throughput, v.measurements.throughput_batch)
        for v in _all(result)
        if v.measurements is not None
    ]
    if not rows:
        return "<p>No variant was measured.</p>"
    bar_h, label_w = 20, 220
    height = len(rows) * (bar_h + 6) + 10
    top = max(r[1] for r in rows) or 1.0
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" role="img" '
        f'aria-label="throughput per variant">'
    ]
    for i, (v, tput, batch) in enumerate(rows):
        y = 5 + i * (bar_h + 6)
        w = (width - label_w - 110) * tput / top
        parts.append(
            f'<text x="{label_w - 6}" y="{y + 14}" text-anchor="end" font-size="11">{html.escape(v.name)}</text>'
        )
        parts.append(
            f'<rect x="{label_w}" y="{y}" width="{w:.1f}" height="{bar_h}" fill="{_COLORS[_role(result, v)]}"/>'
        )
        parts.append(f'<text x="{label_w + w + 4:.1f}" y="{y + 14}" font-size="11">{tput:,.0f}/s (b{batch})</text>')
    parts.append("</svg>")
    return "".join(parts)


def _table(result: OptimizeResult, rows: Sequence[VariantResult]) -> str:
    head = (
        "variant",
        "status",
        result.metric,
        "worst",
        "p50 ms",
        "p99 ms",
        "spread ms (min/med/max)",
        "speed-up",
        "throughput/s",
        "peak MiB",
        "size KiB",
        "load s",
        "build s",
        "energy J/inf",
        "serve as",
        "version",
        "why",
    )
    out = ["<table><tr>" + "".join(f"<th>{h}</th>" for h in head) + "</tr>"]
    for v in rows:
        m = v.measurements
        plan = (
            (f"{v.plan.threads} threads, batches of {v.plan.max_batch_size}, delay {v.plan.max_queue_delay_ms:g} ms")
            if v.plan
            else "—"
        )
        energy = (
            "—"
            if m is None
            else (
                _fmt(m.energy.joules_per_inference, 6) if m.energy.joules_per_inference is not None else m.energy.source
            )
        )
        cells = (
            v.name,
            v.status,
            _fmt(v.score.value if v.score else None, 4),
            _fmt(v.score.worst if v.score else None, 4),
            _fmt(m.latency.p50_ms if m else None),
            _fmt(m.latency.p99_ms if m else None),
            "—"
            if m is None
            else "/".join(
                _fmt(x) for x in (m.latency.rounds_ms.min, m.latency.rounds_ms.median, m.latency.rounds_ms.max)
            ),
            _fmt(v.speedup, 2) + ("x" if v.speedup else ""),
            "—" if m is None else f"{m.throughput:,.0f} (b{m.throughput_batch})",
            _fmt(m.peak_memory_mb if m else None, 1) if m and m.peak_memory_mb is not None else "—",
            "—" if m is None else f"{m.file_size_bytes / 1024:,.1f}",
            _fmt(m.load_time_s if m else None),
            _fmt(m.conversion_time_s if m else None),
            energy,
            plan,
            "—" if v.version is None else str(v.version),
            v.reason + (f"; {v.note}" if v.note else ""),
        )
        cls = f' class="{_role(result, v)}"'
        out.append(f"<tr{cls}>" + "".join(f"<td>{html.escape(str(c))}</td>" for c in cells) + "</tr>")
    out.append("</table>")
    return "".join(out)


def _fallbacks(result: OptimizeResult) -> str:
    parts = []
    for v in result.variants:
        fb = v.fallback
        if fb is None:
            continue
        nodes = "".join(
            f"<li><code>{html.escape(n.name)}</code> ({html.escape(n.op_type)}): adds "
            f"{n.added_error:.4f} relative error</li>"
            for n in fb.kept_in_float
        )
        steps = "".join(
            f"<li>{s.excluded} in float: {result.metric} {s.score:.4f}, {s.p50_ms:.3f} ms, "
            f"{'inside' if s.accepted else 'outside'} the budget</li>"
            for s in fb.steps
        )
        parts.append(
            f"<h3>{html.escape(v.name)} (from {html.escape(fb.from_variant)})</h3>"
            f"<p>{html.escape(fb.outcome)}</p><p>Kept in float:</p><ul>{nodes}</ul>"
            f"<p>Steps:</p><ol>{steps}</ol>"
        )
    return "".join(parts) or "<p>No fallback search was needed.</p>"


def _groups(result: OptimizeResult) -> str:
    """The metric per group (language, segment), one row per judged variant; the worst group is marked."""
    judged = [v for v in _all(result) if v.score is not None and v.score.groups]
    if not judged:
        return ""
    names = sorted({g for v in judged for g in v.score.groups})  # type: ignore[union-attr]
    head = "".join(f"<th>{html.escape(g)}</th>" for g in names)
    rows = []
    for v in judged:
        groups = v.score.groups  # type: ignore[union-attr]
        worst = worst_group(v.score, result.higher_is_better)  # type: ignore[arg-type]
        cells = []
        for g in names:
            s = groups.get(g)
            text = (
                "—" if s is None else _fmt(s.value, 4) + (f" (worst {_fmt(s.worst, 4)})" if s.worst is not None else "")
            )
            cells.append(f"<td><b>{text}</b></td>" if g == worst and len(groups) > 1 else f"<td>{text}</td>")
        rows.append(f'<tr class="{_role(result, v)}"><td>{html.escape(v.name)}</td>{"".join(cells)}</tr>')
    return (
        f"<h2>{html.escape(result.metric)} per group</h2>"
        f"<p>Each group's examples judged alone; the worst group of each variant is in bold.</p>"
        f"<table><tr><th>variant</th>{head}</tr>{''.join(rows)}</table>"
    )


def write_html(result: OptimizeResult, path: Path) -> None:
    env = result.environment
    libs = ", ".join(f"{k} {v}" for k, v in env.libraries.items())
    body = f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>leanserve optimize: {html.escape(result.model)}</title>
<style>
body{{font-family:system-ui,sans-serif;margin:2em;color:#222}}
table{{border-collapse:collapse;font-size:12px}}
td,th{{border:1px solid #ccc;padding:3px 6px;text-align:left}} tr.chosen{{background:#e6f4ea}}
tr.rejected{{color:#8a2a20}} code{{font-size:11px}}
</style></head><body>
<h1>{html.escape(result.model)}: {html.escape(result.chosen)} is served</h1>
<p>{html.escape(result.message)}</p>
<p>Source: {html.escape(result.source.kind)} <code>{html.escape(result.source.origin)}</code>
(sha256 <code>{result.source.sha256[:16]}…</code>). Metric <b>{html.escape(result.metric)}</b>, budget:
{html.escape(result.budget)}. Judged on {result.split.evaluation_examples} held-out examples; calibrated on
{result.split.calibration_examples} others (seed {result.split.seed}). Objective: {result.objective}.</p>
<h2>Latency against accuracy</h2>{tradeoff_svg(result)}
<h2>Throughput at the best batch size</h2>{throughput_svg(result)}
<h2>Variants</h2>{_table(result, _all(result))}
{_groups(result)}
<h2>Accuracy-aware fallback</h2>{_fallbacks(result)}
<h2>Environment</h2><p>{html.escape(env.cpu_model)}, {env.logical_cores} logical cores ({env.usable_cores} usable)
(flags: {html.escape(", ".join(env.cpu_flags) or "none of interest")}); {html.escape(env.machine)};
Python {env.python}; {html.escape(libs)}.</p>
<p>Every figure was measured on this machine: warm-up runs, then repeated rounds; p50/p99 over all runs,
spread over the rounds' medians. Energy is read from RAPL or NVML counters, and is never estimated.</p>
</body></html>
"""
    path.write_text(body, encoding="utf-8")
