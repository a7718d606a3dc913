"""What a run reports: one ``Result`` per model and load level, the whole run as a ``Report``.

The field names are the JSON schema of ``leanserve bench --json`` (``benchmarks/`` and other
tools read them): do not rename them.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Any


@dataclass(frozen=True, slots=True)
class Result:
    model: str  # the model (or alias); several models joined by "," for the whole mix
    concurrency: int | None  # closed loop
    rate: float | None  # open loop: scheduled requests per second
    duration_s: float  # measured (warm-up excluded)
    requests: int  # answered or failed during the measurement
    throughput: float  # successful requests per second
    p50_ms: float
    p90_ms: float
    p99_ms: float
    p999_ms: float
    max_ms: float
    errors: dict[str, int]  # by HTTP status ("404") or kind ("connect", "reset", "timeout", "unanswered")
    client_cpu: float  # the load generator's CPU use, fraction of one core
    client_saturated: bool  # near a full core: the figures may measure the client
    windows: int
    stable: bool  # the last three windows agree within 10% on throughput and p99
    throughput_ci: tuple[float, float]  # 95% interval of the per-window throughput
    p99_ci_ms: tuple[float, float]  # 95% interval of the per-window p99
    arrivals: str | None = None  # open loop: "poisson" or "constant"
    offered: float | None = None  # open loop: requests that fell due per second (the drawn rate, as it came out)

    @property
    def label(self) -> str:
        if self.concurrency is not None:
            return f"c{self.concurrency}"
        return f"{self.rate:g}/s"


@dataclass(frozen=True, slots=True)
class SloSearch:
    """``--slo-p99``: the highest rate found whose p99 stays under the target.

    Rates here are *offered* rates: requests that fell due per second in the measurement (a short
    Poisson draw comes out above or below the rate asked for; ``result.rate`` is the one asked)."""

    target_p99_ms: float
    rate: float | None  # None: not even the lowest rate tried met the target
    result: Result | None  # the measurement at that rate
    tried: tuple[tuple[float, float, bool], ...]  # (offered rate, p99_ms, met) in the order tried


@dataclass(frozen=True, slots=True)
class Report:
    url: str
    environment: dict[str, Any]
    results: list[Result]
    slo: SloSearch | None = None
    warnings: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        doc: dict[str, Any] = _finite(asdict(self))
        if self.slo is None:
            del doc["slo"]
        return doc


def _finite(value: Any) -> Any:
    """NaN and infinity as null: JSON has neither."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_finite(v) for v in value]
    return value
