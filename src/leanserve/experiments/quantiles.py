"""Latency by quantiles: a log-bucket histogram and distribution-free intervals for p50 and p99.

Latency is heavy-tailed, so arms are compared by quantiles, never by means. Every interval is an
order-statistic interval: the true p-quantile Q lies between two ranked observations, and which
ranks depends only on how many observations fall at or below Q, a Binomial(n, p) count, whatever
the latency distribution. Two choices of ranks:

- :func:`sequential_ranks`: from the beta-binomial mixture martingale on that count, so the
  interval holds at every n at once (continuous monitoring). The decisions use these.
- :func:`fixed_ranks`: from binomial tail probabilities, valid when looked at once, at a sample
  size fixed in advance; narrower, reported for analyses at a planned horizon.

Observations are kept in log-spaced buckets 1% wide (exact counts, bounded memory, mergeable and
cheap to persist); a rank falls in a bucket, and an interval's ends take the bucket's outer
edges, so bucketing can only widen an interval, never make it lie.
"""

from __future__ import annotations

import math
from bisect import bisect_left
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from .statistics import Interval, log_beta_binomial_lr

MIN_VALUE = 1e-6  # seconds: anything faster shares bucket 0
GROWTH = 1.01  # each bucket's upper edge over its lower: 1% resolution
_LOG_GROWTH = math.log(GROWTH)


def bucket_of(value: float) -> int:
    """The bucket of one observation: 0 up to MIN_VALUE, then b covers [MIN*G^(b-1), MIN*G^b)."""
    if not value > MIN_VALUE:  # also catches NaN, which then counts as fastest rather than vanishing
        return 0
    return int(math.log(value / MIN_VALUE) / _LOG_GROWTH) + 1


def buckets_of(values: npt.NDArray[np.float64]) -> npt.NDArray[np.int64]:
    """:func:`bucket_of` of many observations at once."""
    with np.errstate(divide="ignore", invalid="ignore"):
        raw = np.log(values / MIN_VALUE) / _LOG_GROWTH
    out = np.zeros(values.shape, np.int64)
    above = values > MIN_VALUE  # False for NaN, as in bucket_of
    out[above] = raw[above].astype(np.int64) + 1
    return out


def bucket_edges(bucket: int) -> tuple[float, float]:
    if bucket <= 0:
        return 0.0, MIN_VALUE
    return MIN_VALUE * GROWTH ** (bucket - 1), MIN_VALUE * GROWTH**bucket


# ---- which ranks bound the quantile ---------------------------------------------------------------


def sequential_ranks(n: int, p: float, alpha: float, concentration: float) -> tuple[int, int]:
    """Ranks (lo, hi) with Q_p in [X_(lo), X_(hi)] at every n simultaneously, w.p. >= 1 - alpha.

    S = #{X <= Q_p} is Binomial(n, p); the counts s whose mixture martingale stays under 1/alpha
    form an interval [s_lo, s_hi] (log M is convex in s), and S = s puts Q_p in
    [X_(s), X_(s+1)). lo = 0 means no lower bound, hi = n + 1 no upper bound.
    """
    if n == 0:
        return 0, 1
    threshold = math.log(1.0 / alpha)

    def f(s: int) -> float:
        return log_beta_binomial_lr(s, n, p, concentration)

    # The minimum of the convex f: the first s where f stops decreasing.
    lo, hi = 0, n
    while lo < hi:
        mid = (lo + hi) // 2
        if f(mid + 1) >= f(mid):
            hi = mid
        else:
            lo = mid + 1
    s_min = lo
    if f(s_min) >= threshold:  # no count is plausible yet: no bounds at all
        return 0, n + 1
    # Smallest s in [0, s_min] under the threshold (f decreases there).
    lo, hi = 0, s_min
    while lo < hi:
        mid = (lo + hi) // 2
        if f(mid) < threshold:
            hi = mid
        else:
            lo = mid + 1
    s_lo = lo
    # Largest s in [s_min, n] under the threshold (f increases there).
    lo, hi = s_min, n
    while lo < hi:
        mid = (lo + hi + 1) // 2
        if f(mid) < threshold:
            lo = mid
        else:
            hi = mid - 1
    return s_lo, lo + 1


def _binomial_cdf_window(n: int, p: float) -> tuple[int, npt.NDArray[np.float64]]:
    """(k0, cdf) with cdf[i] = P(S <= k0 + i) for S ~ Binomial(n, p), over where the mass is.

    Outside mean +- 12 sd (plus a margin for small n) the mass is below 1e-30; the pmf is built
    from one log-gamma evaluation and the ratio recurrence, vectorized.
    """
    mean = n * p
    sd = math.sqrt(n * p * (1 - p))
    k0 = max(0, math.floor(mean - 12 * sd - 10))
    k1 = min(n, math.ceil(mean + 12 * sd + 10))
    log_pmf0 = math.lgamma(n + 1) - math.lgamma(k0 + 1) - math.lgamma(n - k0 + 1)
    log_pmf0 += k0 * math.log(p) + (n - k0) * math.log1p(-p)
    k = np.arange(k0, k1, dtype=np.float64)  # P(k+1)/P(k) = (n-k)/(k+1) * p/(1-p)
    steps = np.log((n - k) / (k + 1)) + math.log(p / (1 - p))
    log_pmf = log_pmf0 + np.concatenate(([0.0], np.cumsum(steps)))
    return k0, np.minimum(np.cumsum(np.exp(log_pmf)), 1.0)


def fixed_ranks(n: int, p: float, alpha: float) -> tuple[int, int]:
    """Ranks (lo, hi) with P(X_(lo) <= Q_p < X_(hi)) >= 1 - alpha at this one n (exact binomial).

    lo is the largest rank with P(S < lo) <= alpha/2, hi the smallest with P(S >= hi) <= alpha/2.
    """
    if n == 0:
        return 0, 1
    k0, cdf = _binomial_cdf_window(n, p)
    # P(S <= k) for k = k0 + i; below k0 the cdf is 0 for our purposes.
    half = alpha / 2
    # lo - 1 = the largest k with cdf(k) <= alpha/2.
    below = np.nonzero(cdf <= half)[0]
    lo = int(k0 + below[-1] + 1) if below.size else k0
    # hi - 1 = the smallest k with P(S > k) = 1 - cdf(k) <= alpha/2.
    above = np.nonzero(1.0 - cdf <= half)[0]
    hi = int(k0 + above[0] + 1) if above.size else n + 1
    return lo, min(hi, n + 1)


# ---- the histogram --------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class LatencyHistogram:
    """Counts of observations per log bucket, read-only; built from a {bucket: count} mapping."""

    buckets: tuple[int, ...]  # ascending, each with a positive count
    cumulative: tuple[int, ...]  # observations in this bucket and all below it

    @classmethod
    def of(cls, counts: Mapping[int, int]) -> LatencyHistogram:
        items = sorted((b, c) for b, c in counts.items() if c > 0)
        running = 0
        cumulative = []
        for _, c in items:
            running += c
            cumulative.append(running)
        return cls(tuple(b for b, _ in items), tuple(cumulative))

    @property
    def n(self) -> int:
        return self.cumulative[-1] if self.cumulative else 0

    def _bucket_at(self, rank: int) -> int:
        """The bucket of the rank-th smallest observation (1-based)."""
        return self.buckets[bisect_left(self.cumulative, rank)]

    def quantile(self, p: float) -> float:
        """The p-quantile's bucket, at its geometric middle (within half a bucket, 0.5%)."""
        if self.n == 0:
            return math.nan
        lower, upper = bucket_edges(self._bucket_at(max(1, math.ceil(p * self.n))))
        return math.sqrt(lower * upper) if lower > 0 else upper

    def _interval(self, p: float, ranks: tuple[int, int]) -> Interval:
        lo, hi = ranks
        lower = bucket_edges(self._bucket_at(lo))[0] if lo >= 1 else 0.0
        upper = bucket_edges(self._bucket_at(hi))[1] if hi <= self.n else math.inf
        return Interval(self.quantile(p), lower, upper)

    def interval(self, p: float, alpha: float, concentration: float) -> Interval:
        """Always-valid interval for the p-quantile (see :func:`sequential_ranks`)."""
        return self._interval(p, sequential_ranks(self.n, p, alpha, concentration))

    def fixed_interval(self, p: float, alpha: float) -> Interval:
        """Interval for the p-quantile valid at this one sample size (see :func:`fixed_ranks`)."""
        return self._interval(p, fixed_ranks(self.n, p, alpha))


def ratio_interval(
    control: LatencyHistogram, candidate: LatencyHistogram, p: float, alpha: float, concentration: float
) -> Interval:
    """candidate p-quantile / control p-quantile: both quantile intervals at alpha/2, divided out."""
    a = control.interval(p, alpha / 2, concentration)
    b = candidate.interval(p, alpha / 2, concentration)
    lower = b.lower / a.upper  # a.upper infinite gives 0: no lower bound yet
    upper = b.upper / a.lower if a.lower > 0 else math.inf
    return Interval(b.estimate / a.estimate if a.estimate > 0 else math.nan, lower, upper)


def ratio_p_value(
    control: LatencyHistogram,
    candidate: LatencyHistogram,
    p: float,
    bound: float,
    concentration: float,
    above: bool,
) -> float:
    """Always-valid p-value of "the quantile ratio is at most ``bound``" (``above``: the
    interval rejects it by lying wholly above the bound), or of "at least ``bound``" (not
    ``above``: rejected by an interval wholly below).

    The smallest alpha at which the interval lies wholly on that side, found by bisection on
    log alpha (intervals widen as alpha shrinks). Not rejected at 0.5 reads as 1: only small
    p-values ever decide anything.
    """

    def rejects(alpha: float) -> bool:
        interval = ratio_interval(control, candidate, p, alpha, concentration)
        return interval.lower > bound if above else interval.upper < bound

    if not rejects(0.5):
        return 1.0
    lo, hi = math.log(1e-12), math.log(0.5)  # rejects(exp(hi)) holds throughout
    if rejects(math.exp(lo)):
        return 1e-12
    for _ in range(40):
        mid = 0.5 * (lo + hi)
        lo, hi = (lo, mid) if rejects(math.exp(mid)) else (mid, hi)
    return math.exp(hi)
