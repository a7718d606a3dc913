"""Time series for the dashboard, from the cumulative counters in :mod:`leanserve.stats`.

A :class:`Sampler` copies every version's counters every few seconds; the difference between two
copies is what happened in between (requests per second, error rate, latency quantiles from the
histogram's bucket deltas as Prometheus' ``histogram_quantile`` reads them, mean queue and compute
time). The arithmetic is pure functions, tested without a server; the sampler keeps the last few
minutes so that a dashboard opened now shows them at once.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from ..registry import ModelRegistry
from ..stats import LATENCY_BUCKETS, ModelStats


@dataclass(frozen=True, slots=True)
class Counters:
    """One version's (or a model's summed) cumulative counters at one moment."""

    requests: int = 0
    errors: int = 0
    request_buckets: tuple[int, ...] = (0,) * (len(LATENCY_BUCKETS) + 1)  # per bucket, +Inf last
    queued: int = 0  # requests that waited in a batcher ...
    queue_ns: int = 0  # ... and how long, in total
    executions: int = 0  # engine runs ...
    compute_ns: int = 0  # ... and how long, in total

    @classmethod
    def of(cls, stats: ModelStats) -> Counters:
        outcomes = stats.outcomes
        return cls(
            outcomes["success"] + outcomes["client_error"] + outcomes["server_error"],
            outcomes["client_error"] + outcomes["server_error"],
            tuple(stats.request_seconds.counts),
            stats.queue.count,
            stats.queue.ns,
            stats.execution_count,
            stats.compute_infer.ns,
        )

    def __add__(self, other: Counters) -> Counters:
        return Counters(
            self.requests + other.requests,
            self.errors + other.errors,
            tuple(a + b for a, b in zip(self.request_buckets, other.request_buckets, strict=True)),
            self.queued + other.queued,
            self.queue_ns + other.queue_ns,
            self.executions + other.executions,
            self.compute_ns + other.compute_ns,
        )

    def __sub__(self, other: Counters) -> Counters:
        return Counters(
            self.requests - other.requests,
            self.errors - other.errors,
            tuple(a - b for a, b in zip(self.request_buckets, other.request_buckets, strict=True)),
            self.queued - other.queued,
            self.queue_ns - other.queue_ns,
            self.executions - other.executions,
            self.compute_ns - other.compute_ns,
        )


@dataclass(frozen=True, slots=True)
class Point:
    """What happened to one model between two samples; None where nothing was there to measure."""

    rps: float
    error_rate: float | None  # errors / requests
    p50_ms: float | None
    p99_ms: float | None
    queue_ms: float | None  # mean wait per request in the batcher
    compute_ms: float | None  # mean engine time per batch


def histogram_quantile(q: float, bounds: Sequence[float], counts: Sequence[int]) -> float | None:
    """The q-quantile of per-bucket ``counts`` (``len(bounds) + 1`` of them, +Inf last), as Prometheus reads it.

    Linear interpolation inside the bucket where the rank falls, the first bucket starting at 0; a
    rank in the +Inf bucket answers the highest finite bound. None for an empty histogram.
    """
    total = sum(counts)
    if total <= 0:
        return None
    rank = q * total
    seen = 0
    for i, n in enumerate(counts):
        if n > 0 and seen + n >= rank:
            if i == len(bounds):
                return float(bounds[-1])
            lower = bounds[i - 1] if i > 0 else 0.0
            return float(lower + (bounds[i] - lower) * (rank - seen) / n)
        seen += n
    return float(bounds[-1])


def point(delta: Counters, seconds: float) -> Point:
    """What ``delta`` (the counters' growth over ``seconds``) says happened."""
    p50 = histogram_quantile(0.5, LATENCY_BUCKETS, delta.request_buckets)
    p99 = histogram_quantile(0.99, LATENCY_BUCKETS, delta.request_buckets)
    return Point(
        rps=delta.requests / seconds if seconds > 0 else 0.0,
        error_rate=delta.errors / delta.requests if delta.requests > 0 else None,
        p50_ms=p50 * 1e3 if p50 is not None else None,
        p99_ms=p99 * 1e3 if p99 is not None else None,
        queue_ms=delta.queue_ns / delta.queued / 1e6 if delta.queued > 0 else None,
        compute_ms=delta.compute_ns / delta.executions / 1e6 if delta.executions > 0 else None,
    )


# A version's counters keyed by (model, version), with the identity of their ModelStats: a version
# replaced by new files (hot swap) starts new statistics, which must not read as negative traffic.
VersionKey = tuple[str, int]
Taken = dict[VersionKey, tuple[int, Counters]]


def take(stats: Iterable[ModelStats]) -> Taken:
    return {(s.name, s.version): (id(s), Counters.of(s)) for s in stats}


def growth(before: Taken, after: Taken) -> dict[str, Counters]:
    """Per model, what its versions' counters grew by from ``before`` to ``after``."""
    out: dict[str, Counters] = {}
    for key, (identity, now) in after.items():
        previous = before.get(key)
        delta = now - previous[1] if previous is not None and previous[0] == identity else now
        out[key[0]] = out[key[0]] + delta if key[0] in out else delta
    return out


@dataclass(frozen=True, slots=True)
class Sample:
    time: float  # Unix seconds
    counters: Taken
    points: dict[str, Point]  # per model, since the sample before


class Sampler:
    """Every ``every_seconds``, each version's counters; the last ``keep`` samples."""

    def __init__(self, registry: ModelRegistry, every_seconds: float = 2.0, keep: int = 150) -> None:
        if every_seconds <= 0:
            raise ValueError(f"every_seconds must be positive, not {every_seconds}")
        self.registry = registry
        self.every_seconds = every_seconds
        self.samples: deque[Sample] = deque(maxlen=keep)

    def sample(self, now: float | None = None) -> Sample:
        now = time.time() if now is None else now
        counters = take(v.stats for m in self.registry.snapshot() for v in m.versions)
        points: dict[str, Point] = {}
        if self.samples:
            last = self.samples[-1]
            seconds = now - last.time
            points = {name: point(delta, seconds) for name, delta in growth(last.counters, counters).items()}
        sample = Sample(now, counters, points)
        self.samples.append(sample)
        return sample

    def recent(self, seconds: float) -> dict[str, Point]:
        """Per model, over (about) the last ``seconds``: steadier figures than one step's."""
        if len(self.samples) < 2:
            return {}
        last = self.samples[-1]
        first = next((s for s in self.samples if s.time >= last.time - seconds - 1e-9), self.samples[0])
        if first is last:
            first = self.samples[-2]
        span = last.time - first.time
        return {name: point(delta, span) for name, delta in growth(first.counters, last.counters).items()}

    async def run(self) -> None:
        """Sample until cancelled (on the event loop: a sample copies a few counters per version)."""
        while True:
            self.sample()
            await asyncio.sleep(self.every_seconds)


__all__ = ["Counters", "Point", "Sample", "Sampler", "growth", "histogram_quantile", "point", "take"]
