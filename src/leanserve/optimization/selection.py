"""Which variant to serve and which to keep: small pure policies over measured results."""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

from .results import VariantResult
from .sweep import Objective


def _servable(v: VariantResult) -> bool:
    return v.status == "accepted" and v.measurements is not None


def _key(v: VariantResult, objective: Objective) -> float:
    """Lower is better; unmeasured variants sort last."""
    m = v.measurements
    if m is None:
        return math.inf
    return -m.throughput if objective == "throughput" else m.latency.p50_ms


def choose(original: VariantResult, variants: Sequence[VariantResult], objective: Objective) -> VariantResult:
    """The fastest variant inside the budget; the original when none is faster."""
    servable = [v for v in variants if _servable(v)]
    best = min(servable, key=lambda v: _key(v, objective), default=None)
    if best is None or _key(best, objective) >= _key(original, objective):
        return original
    return best


def _axes(v: VariantResult, higher_is_better: bool) -> tuple[float, float, float]:
    """Larger is better on every axis: batch-1 latency, best throughput, metric."""
    m, s = v.measurements, v.score
    if m is None or s is None:
        return (-math.inf, -math.inf, -math.inf)
    # Metric differences below 1e-4 are noise (fp32 engines agree to ~1e-7), not a reason to keep.
    score = round(s.value if higher_is_better else -s.value, 4)
    return (-m.latency.p50_ms, m.throughput, score)


def keep(
    chosen: VariantResult, variants: Sequence[VariantResult], higher_is_better: bool, limit: int = 4
) -> list[VariantResult]:
    """Accepted variants worth a version: the chosen one, then the others that no variant beats on
    every axis (batch-1 latency, best throughput, metric), fastest first, ``limit`` in all."""
    servable = [v for v in variants if _servable(v)]
    axes = {id(v): _axes(v, higher_is_better) for v in servable}

    def dominated(v: VariantResult) -> bool:
        a = axes[id(v)]
        return any(
            w is not v and axes[id(w)] != a and all(y >= x for x, y in zip(a, axes[id(w)], strict=True))
            for w in servable
        )

    front = sorted((v for v in servable if v is not chosen and not dominated(v)), key=lambda v: _key(v, "latency"))
    return ([chosen] if chosen in servable else []) + front[: max(0, limit - 1)]


def fallback_order(
    variants: Sequence[VariantResult],
    families: Sequence[str],
    limit: float,
    higher_is_better: bool,
    objective: Objective,
    family_of: Callable[[VariantResult], str],
) -> list[str]:
    """The quantized families to search for nodes to keep in float, closest to the budget first.

    Only families none of whose members fits are searched, and only those whose fastest member
    beats every accepted variant: keeping nodes in float never makes a model faster, so a family
    already slower than a servable variant cannot win. The search costs minutes on a
    transformer; the family whose best member misses by least is the likeliest to fit with a few
    nodes in float (MiniLM's int8 dynamic misses 0.99 cosine by 0.001, its static QDQ by 0.6).
    """
    best_accepted = min((_key(v, objective) for v in variants if _servable(v)), default=math.inf)
    gaps: dict[str, float] = {}
    for family in families:
        members = [v for v in variants if family_of(v) == family and v.score is not None]
        if not members or any(v.status == "accepted" for v in members):
            continue
        if min(_key(v, objective) for v in members) >= best_accepted:
            continue
        best = max(v.score.value if higher_is_better else -v.score.value for v in members)  # type: ignore[union-attr]
        gaps[family] = (limit - best) if higher_is_better else (-best - limit)
    return sorted(gaps, key=gaps.__getitem__)
