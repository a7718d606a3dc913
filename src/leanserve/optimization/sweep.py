"""Threads x batch size sweep, and the serving plan read from it.

The sweep is mechanism (load, time); :func:`recommend` is the policy, a pure function of the
measured points, unit-tested without an engine.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Final, Literal

import numpy as np

from ..runtimes import Runtime
from ..timing import Settings, time_for

# What "fastest" means: batch-1 p50 latency, or rows per second at each variant's best batch.
# It picks the serving plan's threads here and the variant served in selection.
Objective = Literal["latency", "throughput"]
OBJECTIVES: Final[tuple[Objective, ...]] = ("latency", "throughput")
DEFAULT_OBJECTIVE: Final[Objective] = "latency"

# A larger batch must buy at least this much throughput to be worth its extra latency.
_BATCH_GAIN = 1.10
# Thread counts within this fraction of the best are equivalent; the fewest wins, since the
# spare cores serve the HTTP front end and other models.
_THREAD_TOLERANCE = 0.05
_MAX_QUEUE_DELAY_MS = 5.0
# The sweep stops growing the batch when doubling it gains less than this.
_BATCH_GAIN_STEP = 1.05


@dataclass(frozen=True, slots=True)
class SweepPoint:
    threads: int
    batch_size: int
    latency_ms: float  # median time of one batch
    throughput: float  # inferences per second


@dataclass(frozen=True, slots=True)
class ServingPlan:
    threads: int
    max_batch_size: int  # 0: the model does not batch (fixed batch dimension)
    max_queue_delay_ms: float
    best_batch_size: int
    throughput: float  # inferences per second at best_batch_size with ``threads``
    reason: str


def thread_candidates(cores: int) -> list[int]:
    counts = {1, cores}
    n = 2
    while n < cores:
        counts.add(n)
        n *= 2
    return sorted(counts)


def batch_candidates(dynamic_batch: bool, quick: bool, largest: int = 64) -> list[int]:
    if not dynamic_batch:
        return [1]
    if quick:
        return [b for b in (1, 8, 32) if b <= largest]
    return [b for b in (1, 2, 4, 8, 16, 32, 64) if b <= largest]


def tile(inputs: Mapping[str, np.ndarray], batch_size: int) -> dict[str, np.ndarray]:
    """A batch of ``batch_size`` examples, repeating the data when it holds fewer."""
    out = {}
    for name, array in inputs.items():
        reps = -(-batch_size // len(array))
        out[name] = (
            np.ascontiguousarray(np.concatenate([array] * reps)[:batch_size]) if reps > 1 else array[:batch_size]
        )
    return out


def sweep(
    load: Callable[[int], Runtime],
    inputs: Mapping[str, np.ndarray],
    threads: Sequence[int],
    batch_sizes: Sequence[int],
    settings: Settings,
) -> list[SweepPoint]:
    points = []
    for t in threads:
        runtime = load(t)
        try:
            points.extend(_points(runtime, t, inputs, batch_sizes, settings))
        finally:
            runtime.close()
    return points


def _points(
    runtime: Runtime, threads: int, inputs: Mapping[str, np.ndarray], batch_sizes: Sequence[int], settings: Settings
) -> list[SweepPoint]:
    points: list[SweepPoint] = []
    for b in batch_sizes:
        feed = tile(inputs, b)
        ms = time_for(lambda feed=feed: runtime.run(feed), settings.sweep_seconds, min_runs=2)  # type: ignore[misc]
        points.append(SweepPoint(threads=threads, batch_size=b, latency_ms=ms, throughput=b * 1000.0 / ms))
        # Doubling the batch that no longer buys throughput will not start to at the next size;
        # stopping here saves the slowest points of the sweep.
        if len(points) > 1 and points[-1].throughput < max(p.throughput for p in points[:-1]) * _BATCH_GAIN_STEP:
            break
    return points


def recommend(
    points: Sequence[SweepPoint], dynamic_batch: bool, objective: Objective = DEFAULT_OBJECTIVE
) -> ServingPlan:
    """How to serve: threads, max_batch_size and max_queue_delay_ms from the sweep.

    The threads are those with the best throughput at any batch size, or, for the latency
    objective, those that answer one request fastest.
    """
    if not points:
        raise ValueError("no sweep points")
    threads = _threads(points, objective)
    mine = sorted((p for p in points if p.threads == threads), key=lambda p: p.batch_size)
    b1 = mine[0]
    # The smallest batch that reaches nearly the best throughput: larger batches add latency
    # and memory for little gain.
    best = max(mine, key=lambda p: p.throughput)
    chosen = next(p for p in mine if p.throughput >= best.throughput * (1 - _THREAD_TOLERANCE))
    if not dynamic_batch:
        return ServingPlan(threads, 0, 0.0, 1, b1.throughput, "the model has a fixed batch dimension")
    if chosen.throughput < b1.throughput * _BATCH_GAIN:
        return ServingPlan(
            threads,
            1,
            0.0,
            1,
            b1.throughput,
            f"batching gains less than {(_BATCH_GAIN - 1) * 100:.0f}% throughput here",
        )
    # Waiting costs a lone request latency; beyond about half of one batch-1 inference the
    # wait outweighs what batching gives back. Under load the batcher fills batches anyway.
    delay = round(min(b1.latency_ms / 2, _MAX_QUEUE_DELAY_MS), 2)
    return ServingPlan(
        threads,
        chosen.batch_size,
        delay,
        chosen.batch_size,
        chosen.throughput,
        f"batch {chosen.batch_size} gives {chosen.throughput / b1.throughput:.2f}x the batch-1 throughput",
    )


def _threads(points: Sequence[SweepPoint], objective: Objective) -> int:
    singles = {p.threads: p.latency_ms for p in points if p.batch_size == 1}
    if objective == "latency" and singles:
        # On a small model a second thread costs more in hand-offs than it computes: the
        # threads that serve a lone request fastest can differ from those of the best batch.
        fastest = min(singles.values())
        return min(t for t, ms in singles.items() if ms <= fastest * (1 + _THREAD_TOLERANCE))
    best_by_threads = {t: max(p.throughput for p in points if p.threads == t) for t in {p.threads for p in points}}
    top = max(best_by_threads.values())
    return min(t for t, v in best_by_threads.items() if v >= top * (1 - _THREAD_TOLERANCE))
