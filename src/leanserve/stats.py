"""Per model-version statistics: the single source of truth for Triton's statistics extension
(``/v2/models/{m}/stats``) and for the Prometheus exposition (:mod:`leanserve.server.metrics`).

Everything here is updated on the event-loop thread only, so plain integers suffice; this keeps
the hot path at a few hundred nanoseconds per observation, where prometheus-client's locked
metrics would cost microseconds per request.
"""

from __future__ import annotations

import time
from bisect import bisect_left
from dataclasses import dataclass, field
from typing import Final

# Seconds. Spans 50 µs (a tiny model inline) to 10 s (a large model under load).
LATENCY_BUCKETS: Final[tuple[float, ...]] = (
    0.00005,
    0.0001,
    0.00025,
    0.0005,
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
    10.0,
)
BATCH_SIZE_BUCKETS: Final[tuple[float, ...]] = (1, 2, 4, 8, 16, 32, 64, 128, 256)

OUTCOMES: Final[tuple[str, ...]] = ("success", "client_error", "server_error")
# Why a request never reached the engine (admission.py decides; the batcher counts).
DROP_REASONS: Final[tuple[str, ...]] = ("disconnected", "deadline", "expected_wait", "overload")
# Why a version was unloaded: to make room in the memory budget, by the control API, replaced by
# new files (hot swap), removed from the repository, or at shutdown.
UNLOAD_REASONS: Final[tuple[str, ...]] = ("evicted", "operator", "replaced", "removed", "shutdown")


def outcome_of(status: int) -> str:
    """The outcome label of an HTTP status: success, client_error (4xx) or server_error (5xx)."""
    if status < 400:
        return "success"
    return "client_error" if status < 500 else "server_error"


class Histogram:
    """Cumulative-at-read histogram: one counter per upper bound, plus +Inf."""

    __slots__ = ("buckets", "counts", "sum")

    def __init__(self, buckets: tuple[float, ...]) -> None:
        self.buckets = buckets
        self.counts = [0] * (len(buckets) + 1)
        self.sum = 0.0

    def observe(self, value: float) -> None:
        self.counts[bisect_left(self.buckets, value)] += 1
        self.sum += value

    @property
    def count(self) -> int:
        return sum(self.counts)

    def cumulative(self) -> list[tuple[str, int]]:
        """(upper bound, cumulative count) pairs in Prometheus' form, +Inf last."""
        out: list[tuple[str, int]] = []
        running = 0
        for bound, n in zip(self.buckets, self.counts, strict=False):
            running += n
            out.append((_format_bound(bound), running))
        out.append(("+Inf", running + self.counts[-1]))
        return out


def _format_bound(bound: float) -> str:
    return repr(float(bound))


@dataclass(slots=True)
class Duration:
    """Count and total nanoseconds, the shape of Triton's statistics."""

    count: int = 0
    ns: int = 0

    def add(self, seconds: float, count: int = 1) -> None:
        self.count += count
        self.ns += int(seconds * 1e9)

    def as_dict(self) -> dict[str, int]:
        return {"count": self.count, "ns": self.ns}


@dataclass(slots=True)
class StepStats:
    """One step of a processed model: count and time, and their histogram."""

    duration: Duration = field(default_factory=Duration)
    seconds: Histogram = field(default_factory=lambda: Histogram(LATENCY_BUCKETS))


@dataclass(slots=True)
class ModelStats:
    name: str
    version: int
    load_seconds: float = 0.0
    memory_bytes: int = 0  # memory the model added when it loaded (and warmed up): resident and device
    device_memory_bytes: dict[int, int] = field(default_factory=dict)  # of which on each GPU (NVML)
    loads: int = 0
    load_failures: int = 0
    unloads: dict[str, int] = field(default_factory=lambda: dict.fromkeys(UNLOAD_REASONS, 0))
    memory_not_returned_bytes: int = 0  # of the last unload: what the process kept of the model's memory
    last_inference_ms: int = 0
    inference_count: int = 0  # rows (items) inferred
    execution_count: int = 0  # engine runs (batches)
    in_flight: int = 0
    outcomes: dict[str, int] = field(default_factory=lambda: dict.fromkeys(OUTCOMES, 0))
    success: Duration = field(default_factory=Duration)
    fail: Duration = field(default_factory=Duration)
    queue: Duration = field(default_factory=Duration)
    compute_infer: Duration = field(default_factory=Duration)
    batch_compute: dict[int, Duration] = field(default_factory=dict)
    request_seconds: Histogram = field(default_factory=lambda: Histogram(LATENCY_BUCKETS))
    queue_seconds: Histogram = field(default_factory=lambda: Histogram(LATENCY_BUCKETS))
    compute_seconds: Histogram = field(default_factory=lambda: Histogram(LATENCY_BUCKETS))
    batch_size: Histogram = field(default_factory=lambda: Histogram(BATCH_SIZE_BUCKETS))
    # Processed models (handlers, ragged inputs, pipelines): time per step ("preprocess", "engine",
    # "postprocess", ...), per batch that step ran. Empty for a plain model.
    steps: dict[str, StepStats] = field(default_factory=dict)
    # Failed requests by HTTP status. Every success is a 200, read from ``outcomes`` when asked
    # (:meth:`responses_by_code`), so the success path pays nothing for counting codes.
    error_codes: dict[int, int] = field(default_factory=dict)
    dropped: dict[str, int] = field(default_factory=lambda: dict.fromkeys(DROP_REASONS, 0))
    # Of the requests in ``outcomes``, those that did not come over HTTP, by (protocol, outcome):
    # "grpc", and "shadow" for the copies a shadow experiment sends. HTTP's own counts are the rest,
    # taken at scrape time (:meth:`outcomes_by_protocol`), so an HTTP request pays nothing for the label.
    not_http: dict[tuple[str, str], int] = field(default_factory=dict)

    def record_request(self, outcome: str, seconds: float) -> None:
        self.outcomes[outcome] += 1
        self.request_seconds.observe(seconds)
        if outcome == "success":
            self.success.add(seconds)
        else:
            self.fail.add(seconds)

    def record_success(self, seconds: float) -> None:
        """``record_request("success", seconds)``, inlined: it runs once per answered request."""
        self.outcomes["success"] += 1
        histogram = self.request_seconds
        histogram.counts[bisect_left(histogram.buckets, seconds)] += 1
        histogram.sum += seconds
        success = self.success
        success.count += 1
        success.ns += int(seconds * 1e9)

    def record_failure(self, status: int, seconds: float) -> None:
        """A request answered with an error status (4xx: the client's fault, 5xx: ours or the model's)."""
        self.error_codes[status] = self.error_codes.get(status, 0) + 1
        self.record_request(outcome_of(status), seconds)

    def count_protocol(self, protocol: str, outcome: str) -> None:
        """One request already counted in ``outcomes`` came over ``protocol`` (not HTTP)."""
        key = (protocol, outcome)
        self.not_http[key] = self.not_http.get(key, 0) + 1

    def outcomes_by_protocol(self) -> dict[tuple[str, str], int]:
        """Requests answered, by (protocol, outcome): HTTP's are what the other protocols leave."""
        counts = {("http", outcome): count for outcome, count in self.outcomes.items()}
        for (protocol, outcome), count in self.not_http.items():
            counts[("http", outcome)] -= count
            counts[(protocol, outcome)] = count
        return counts

    def responses_by_code(self) -> dict[int, int]:
        """Requests answered, by HTTP status."""
        return {200: self.outcomes["success"], **self.error_codes}

    def record_queue(self, seconds: float) -> None:
        self.queue.add(seconds)
        self.queue_seconds.observe(seconds)

    def record_queue_waits(self, waits: list[float]) -> None:
        """:meth:`record_queue` for every request of one batch, in one call."""
        total = sum(waits)
        self.queue.count += len(waits)
        self.queue.ns += int(total * 1e9)
        histogram = self.queue_seconds
        counts, buckets = histogram.counts, histogram.buckets
        for seconds in waits:
            counts[bisect_left(buckets, seconds)] += 1
        histogram.sum += total

    def record_batch(self, rows: int, seconds: float) -> None:
        self.execution_count += 1
        self.inference_count += rows
        self.last_inference_ms = int(time.time() * 1000)
        self.compute_infer.add(seconds)
        self.compute_seconds.observe(seconds)
        self.batch_size.observe(rows)
        per_size = self.batch_compute.get(rows)
        if per_size is None:
            per_size = self.batch_compute[rows] = Duration()
        per_size.add(seconds)

    def record_step(self, step: str, seconds: float) -> None:
        stats = self.steps.get(step)
        if stats is None:
            stats = self.steps[step] = StepStats()
        stats.duration.add(seconds)
        stats.seconds.observe(seconds)

    def triton_dict(self) -> dict[str, object]:
        """This version's entry of Triton's ``model_stats`` list."""
        empty = Duration().as_dict()
        device = sum(self.device_memory_bytes.values())
        # Triton's compute_input / compute_output are a model's pre- and post-processing.
        pre, post = self.steps.get("preprocess"), self.steps.get("postprocess")
        return {
            "name": self.name,
            "version": str(self.version),
            "last_inference": self.last_inference_ms,
            "inference_count": self.inference_count,
            "execution_count": self.execution_count,
            "inference_stats": {
                "success": self.success.as_dict(),
                "fail": self.fail.as_dict(),
                "queue": self.queue.as_dict(),
                "compute_input": pre.duration.as_dict() if pre is not None else empty,
                "compute_infer": self.compute_infer.as_dict(),
                "compute_output": post.duration.as_dict() if post is not None else empty,
                "cache_hit": empty,
                "cache_miss": empty,
            },
            "batch_stats": [
                {
                    "batch_size": size,
                    "compute_input": empty,
                    "compute_infer": d.as_dict(),
                    "compute_output": empty,
                }
                for size, d in sorted(self.batch_compute.items())
            ],
            "memory_usage": [
                {"type": "CPU", "id": 0, "byte_size": max(0, self.memory_bytes - device)},
                *({"type": "GPU", "id": i, "byte_size": n} for i, n in sorted(self.device_memory_bytes.items())),
            ],
            "load_seconds": round(self.load_seconds, 6),
            "loads": self.loads,
            "unloads": dict(self.unloads),
            "in_flight": self.in_flight,
            "outcomes": dict(self.outcomes),
            "dropped": dict(self.dropped),
            "steps": {name: step.duration.as_dict() for name, step in self.steps.items()},
        }
