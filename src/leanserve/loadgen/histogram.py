"""A latency histogram exact to 0.1%: log buckets two thousandths wide, read at their geometric middle.

HdrHistogram's idea at three significant digits, in numpy: a window's latencies are recorded in
one vectorized call (the load generator keeps them in a flat array while it runs, so the request
path never computes a bucket), histograms of windows merge by adding counts, and any quantile is
within 0.1% of the exact order statistic. Min and max are kept exact.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

PRECISION = 0.001  # relative error of any quantile read back
LOWEST_S = 1e-6  # below this a latency is counted as 1 us (the minimum stays exact)
HIGHEST_S = 3600.0  # above this, in the last bucket (the maximum stays exact)
# Bucket edges grow by RATIO; the geometric middle of [a, a*RATIO] is a*sqrt(RATIO), within
# PRECISION of every value in the bucket (a hair inside, so that rounding cannot cross it).
RATIO = (1 + 0.999 * PRECISION) ** 2
_LOG_RATIO = math.log(RATIO)
BUCKETS = math.ceil(math.log(HIGHEST_S / LOWEST_S) / _LOG_RATIO) + 1


def bucket_index(seconds: np.ndarray) -> np.ndarray:
    """The bucket of each latency (seconds), clipped to the histogram's range."""
    clipped = np.clip(seconds, LOWEST_S, HIGHEST_S)
    index: np.ndarray = np.minimum((np.log(clipped / LOWEST_S) / _LOG_RATIO).astype(np.int64), BUCKETS - 1)
    return index


def bucket_middle(index: int) -> float:
    return float(LOWEST_S * RATIO ** (index + 0.5))


@dataclass(slots=True)
class Histogram:
    counts: np.ndarray = field(default_factory=lambda: np.zeros(BUCKETS, np.int64))
    count: int = 0
    min: float = math.inf
    max: float = 0.0
    total: float = 0.0  # sum of latencies, seconds (for the mean)

    @classmethod
    def of(cls, seconds: np.ndarray | list[float]) -> Histogram:
        h = cls()
        h.record(np.asarray(seconds, np.float64))
        return h

    def record(self, seconds: np.ndarray) -> None:
        if seconds.size == 0:
            return
        self.counts += np.bincount(bucket_index(seconds), minlength=BUCKETS)
        self.count += int(seconds.size)
        self.min = min(self.min, float(seconds.min()))
        self.max = max(self.max, float(seconds.max()))
        self.total += float(seconds.sum())

    def merge(self, other: Histogram) -> None:
        self.counts += other.counts
        self.count += other.count
        self.min = min(self.min, other.min)
        self.max = max(self.max, other.max)
        self.total += other.total

    def quantiles(self, qs: tuple[float, ...]) -> list[float]:
        """The q-quantiles (0..1) in seconds: each the ceil(q*n)-th smallest latency, within 0.1%; NaN when empty."""
        if self.count == 0:
            return [math.nan] * len(qs)
        cumulative = np.cumsum(self.counts)
        out = []
        for q in qs:
            if q >= 1.0 or q <= 0.0:
                out.append(self.max if q >= 1.0 else self.min)
                continue
            index = int(np.searchsorted(cumulative, max(1, math.ceil(q * self.count))))
            out.append(min(max(bucket_middle(index), self.min), self.max))
        return out

    def quantile(self, q: float) -> float:
        return self.quantiles((q,))[0]

    def quantiles_ms(self, qs: tuple[float, ...]) -> list[float]:
        return [v * 1e3 for v in self.quantiles(qs)]

    @property
    def mean(self) -> float:
        return self.total / self.count if self.count else math.nan
