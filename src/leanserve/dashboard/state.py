"""What the dashboard shows, as one JSON document (``GET /v2/dashboard/state``), from snapshots and samples."""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from typing import Any

from ..registry import ModelRegistry, ModelSnapshot, State, VersionSnapshot
from ..stats import BATCH_SIZE_BUCKETS, ModelStats
from .series import Point, Sampler

RECENT_SECONDS = 30.0  # the table's figures: steadier than one sampling step
SERIES_FIELDS = ("rps", "error_rate", "p50_ms", "p99_ms", "queue_ms", "compute_ms")

ReportLinks = Callable[[str], dict[str, str]]


def state_label(version: VersionSnapshot) -> str:
    """ready, loading, unloading, unloaded (on demand, by an operator, replaced) or failed (with its reason)."""
    if version.state is State.UNAVAILABLE:
        return "failed" if version.failed else "unloaded"
    label: str = version.state.value.lower()
    return label


def batch_size_labels() -> list[str]:
    """One label per bucket of :data:`leanserve.stats.BATCH_SIZE_BUCKETS`: rows per engine run."""
    labels: list[str] = []
    lower = 0
    for bound in BATCH_SIZE_BUCKETS:
        upper = int(bound)
        labels.append(str(upper) if upper == lower + 1 else f"{lower + 1}-{upper}")
        lower = upper
    labels.append(f">{lower}")
    return labels


def dashboard_state(
    registry: ModelRegistry,
    sampler: Sampler,
    reports: ReportLinks,
    unrouted: Mapping[int, int],
) -> dict[str, Any]:
    models = registry.snapshot()
    recent = sampler.recent(RECENT_SECONDS)
    budget = registry.options.memory_budget
    return {
        "time": time.time(),
        "sample_seconds": sampler.every_seconds,
        "memory": {
            "budget_bytes": budget,
            "used_bytes": registry.used_bytes(),
            "baseline_bytes": registry.baseline_bytes,
        },
        "models": [_model(m, recent.get(m.name), reports(m.name)) for m in models],
        "series": _series(sampler, [m.name for m in models]),
        "unrouted": {str(status): n for status, n in sorted(unrouted.items())},
        "experiments": [],  # each experiment's status (the server fills it in, reading SQLite off the loop)
    }


def _model(model: ModelSnapshot, recent: Point | None, reports: dict[str, str]) -> dict[str, Any]:
    labels = batch_size_labels()
    batch_counts = [0] * len(labels)
    codes: dict[int, int] = {}
    for v in model.versions:
        for i, n in enumerate(v.stats.batch_size.counts):
            batch_counts[i] += n
        for code, n in v.stats.responses_by_code().items():
            codes[code] = codes.get(code, 0) + n
    return {
        "name": model.name,
        "error": model.error,
        "default_version": model.default_version,
        "versions": [_version(v) for v in model.versions],
        "reports": reports,
        "recent": _point(recent),
        "totals": _totals([v.stats for v in model.versions], codes),
        "batch_sizes": [{"rows": label, "count": n} for label, n in zip(labels, batch_counts, strict=True)],
    }


def _version(v: VersionSnapshot) -> dict[str, Any]:
    return {
        "version": v.version,
        "state": state_label(v),
        "reason": v.reason if not v.ready else "",
        "load": v.load,
        "resident": v.resident,
        "memory_bytes": v.memory_bytes,
        "in_flight": v.stats.in_flight,
        "queued": v.queued,
    }


def _totals(stats: list[ModelStats], codes: dict[int, int]) -> dict[str, Any]:
    queued = sum(s.queue.count for s in stats)
    executions = sum(s.execution_count for s in stats)
    return {
        "requests": sum(codes.values()),
        "errors": sum(n for code, n in codes.items() if code >= 400),
        "codes": {str(code): n for code, n in sorted(codes.items()) if n},
        "queue_ms": sum(s.queue.ns for s in stats) / queued / 1e6 if queued else None,
        "compute_ms": sum(s.compute_infer.ns for s in stats) / executions / 1e6 if executions else None,
    }


def _point(p: Point | None) -> dict[str, float | None]:
    if p is None:
        return dict.fromkeys(SERIES_FIELDS)
    return {name: getattr(p, name) for name in SERIES_FIELDS}


def _series(sampler: Sampler, names: list[str]) -> dict[str, Any]:
    """Aligned columns for the charts: one time axis, and per model one list per figure (None: no data)."""
    samples = [s for s in sampler.samples if s.points]
    models: dict[str, dict[str, list[float | None]]] = {}
    for name in names:
        points = [s.points.get(name) for s in samples]
        models[name] = {f: [getattr(p, f) if p is not None else None for p in points] for f in SERIES_FIELDS}
    return {"t": [s.time for s in samples], "models": models}


__all__ = ["dashboard_state", "state_label"]
