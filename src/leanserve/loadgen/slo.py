"""``--slo-p99 5ms``: the highest open-loop rate whose p99 stays under a target. Pure policy.

A rate *meets* the target when its p99 is at most the target, nothing failed, and the server kept
up (it answered at least 90% of the requests that fell due: a server that falls behind has an unbounded
queue whatever its p99 says so far). From a start rate the search grows by half until a rate fails,
then bisects (geometrically) between the best that met and the lowest that failed until they are
within ``precision`` of each other, in at most ``max_steps`` measurements.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

GROWTH = 1.5
KEPT_UP = 0.9


@dataclass(frozen=True, slots=True)
class Trial:
    offered: float  # requests that fell due per second (a Poisson draw differs from the rate asked for)
    p99_ms: float
    throughput: float
    errors: int
    rate: float = math.nan  # the rate asked for (default: the offered rate)

    def __post_init__(self) -> None:
        if math.isnan(self.rate):
            object.__setattr__(self, "rate", self.offered)

    def meets(self, target_ms: float) -> bool:
        return (
            self.errors == 0
            and not math.isnan(self.p99_ms)
            and self.p99_ms <= target_ms
            and self.throughput >= KEPT_UP * self.offered
        )


def next_rate(
    trials: Sequence[Trial],
    target_ms: float,
    start: float,
    precision: float = 0.05,
    max_steps: int = 12,
    min_rate: float = 0.1,
) -> float | None:
    """The next rate to try, or None when the search is done (``min_rate``: below it a measurement
    holds too few requests for a p99 to mean anything)."""
    if not trials:
        return start
    if len(trials) >= max_steps:
        return None
    met = [t.rate for t in trials if t.meets(target_ms)]
    failed = [t.rate for t in trials if not t.meets(target_ms)]
    best = max(met, default=None)
    above = min((r for r in failed if best is None or r > best), default=None)
    if above is None:  # everything met so far: grow
        assert best is not None
        return best * GROWTH
    if best is None:  # nothing met yet: shrink
        lowest = min(failed)
        return lowest / 4 if lowest / 4 >= min_rate else None
    if above / best <= 1 + precision:
        return None
    return math.sqrt(best * above)


def best(trials: Sequence[Trial], target_ms: float) -> Trial | None:
    """The trial with the highest offered rate that met the target."""
    return max((t for t in trials if t.meets(target_ms)), key=lambda t: t.offered, default=None)
