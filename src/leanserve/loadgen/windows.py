"""Measurement windows and their stability, as perf_analyzer judges it: pure functions.

A load level is measured in windows of equal length. After the planned windows, more are added
until the last three agree within 10% on throughput and on p99 (each within 10% of their mean),
or a maximum is reached, in which case the result says ``stable: false``. Each reported figure
carries a 95% confidence interval from the spread of its per-window values (Student's t over the
window means: windows are long enough to be roughly independent; a wide interval says they are not
alike, which is the point).
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Sequence
from dataclasses import dataclass

TOLERANCE = 0.10
LAST = 3

# Student's t, two-sided 95%, by degrees of freedom (1..30); 1.96 beyond.
_T95 = (
    12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228,
    2.201, 2.179, 2.160, 2.145, 2.131, 2.120, 2.110, 2.101, 2.093, 2.086,
    2.080, 2.074, 2.069, 2.064, 2.060, 2.056, 2.052, 2.048, 2.045, 2.042,
)  # fmt: skip


@dataclass(frozen=True, slots=True)
class Window:
    """The figures of one measurement window."""

    seconds: float
    requests: int  # answered (any status) or failed
    successes: int
    throughput: float  # successes per second
    p99_ms: float
    client_cpu: float  # fraction of one core


@dataclass(frozen=True, slots=True)
class Plan:
    """How many windows of how long: ``planned`` at least, at most ``maximum``."""

    window_s: float
    planned: int
    maximum: int

    @classmethod
    def for_duration(cls, duration_s: float, window_s: float | None = None, maximum: int | None = None) -> Plan:
        """``duration_s`` split into windows (default: 4 windows, each at least 0.25 s; at least 3 windows)."""
        window = window_s if window_s is not None else max(0.25, duration_s / 4)
        planned = max(LAST, round(duration_s / window))
        return cls(window, planned, max(planned, maximum if maximum is not None else 2 * planned))


def agree(values: Sequence[float], tolerance: float = TOLERANCE) -> bool:
    """Every value within ``tolerance`` of their mean (all zero counts as agreeing)."""
    if any(math.isnan(v) for v in values):
        return False
    mean = statistics.fmean(values)
    if mean == 0:
        return all(v == 0 for v in values)
    return all(abs(v - mean) <= tolerance * abs(mean) for v in values)


def stable(windows: Sequence[Window], tolerance: float = TOLERANCE, last: int = LAST) -> bool:
    """The last ``last`` windows agree on throughput and on p99."""
    if len(windows) < last:
        return False
    tail = windows[-last:]
    return agree([w.throughput for w in tail], tolerance) and agree([w.p99_ms for w in tail], tolerance)


def measure_another(windows: Sequence[Window], plan: Plan, tolerance: float = TOLERANCE) -> bool:
    """Whether to measure one more window."""
    if len(windows) < plan.planned:
        return True
    if len(windows) >= plan.maximum:
        return False
    return not stable(windows, tolerance)


def mean_interval(values: Sequence[float]) -> tuple[float, float]:
    """95% confidence interval of the mean of ``values`` (a point for one value; NaNs when none).

    Cut at zero: the figures it is used for (rates, latencies) are never negative, and a few
    windows that disagree widely would otherwise give an interval reaching below it."""
    finite = [v for v in values if not math.isnan(v)]
    if not finite:
        return (math.nan, math.nan)
    mean = statistics.fmean(finite)
    if len(finite) == 1:
        return (mean, mean)
    t = _T95[len(finite) - 2] if len(finite) - 1 <= len(_T95) else 1.96
    half = t * statistics.stdev(finite) / math.sqrt(len(finite))
    return (max(0.0, mean - half), mean + half)
