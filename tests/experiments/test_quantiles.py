"""Quantile intervals are distribution-free: bucketed latencies, binomial order-statistic ranks, always-valid ones."""

from __future__ import annotations

import math

import numpy as np
import pytest

from leanserve.experiments.quantiles import (
    GROWTH,
    MIN_VALUE,
    LatencyHistogram,
    bucket_edges,
    bucket_of,
    buckets_of,
    fixed_ranks,
    ratio_interval,
    ratio_p_value,
    sequential_ranks,
)
from leanserve.experiments.statistics import NormalMixture

from .support import wilson

C = NormalMixture.tuned(10_000, 0.05).concentration


def histogram_of(values: np.ndarray) -> LatencyHistogram:
    counts: dict[int, int] = {}
    for v in values:
        b = bucket_of(float(v))
        counts[b] = counts.get(b, 0) + 1
    return LatencyHistogram.of(counts)


@pytest.mark.parametrize("value", [2e-6, 0.000123, 0.0071, 0.25, 3.0, 95.0])
def test_a_value_lies_in_its_buckets_edges_one_percent_wide(value: float) -> None:
    lower, upper = bucket_edges(bucket_of(value))
    assert lower <= value < upper
    assert upper / lower == pytest.approx(GROWTH)


def test_tiny_and_invalid_values_share_the_first_bucket() -> None:
    assert bucket_of(0.0) == bucket_of(MIN_VALUE) == bucket_of(float("nan")) == bucket_of(-1.0) == 0
    assert bucket_edges(0) == (0.0, MIN_VALUE)


def test_fixed_ranks_are_the_exact_binomial_ones() -> None:
    assert fixed_ranks(10, 0.5, 0.05) == (2, 9)  # P(S <= 1) = 11/1024 <= 0.025 < P(S <= 2) = 56/1024
    assert fixed_ranks(1000, 0.99, 0.05) == (983, 997)
    assert fixed_ranks(0, 0.5, 0.05) == (0, 1)
    stats = pytest.importorskip("scipy.stats")
    for n, p in ((50, 0.5), (500, 0.99), (20_000, 0.5), (100_000, 0.99)):
        lo, hi = fixed_ranks(n, p, 0.05)
        assert stats.binom.cdf(lo - 1, n, p) <= 0.025 < stats.binom.cdf(lo, n, p)
        assert stats.binom.sf(hi - 1, n, p) <= 0.025 < stats.binom.sf(hi - 2, n, p)


def test_sequential_ranks_hold_at_every_look_where_fixed_ones_do_not() -> None:
    """2,000 simulated streams, looked at every 100 observations up to 20,000 (200 looks, seed 1).

    Whether Q_p lies between the chosen order statistics depends only on S = #{X <= Q_p}, a
    Binomial(n, p) count, whatever the latency distribution; so the counts are simulated
    directly. Measured: the always-valid ranks missed at some look in 1.85% of streams for p50
    and 2.3% for p99; the fixed-n ranks, right 95% of the time at one look, missed at some look
    in 38% (p50) and 34% (p99).
    """
    rng = np.random.default_rng(1)
    ns = 100 * np.arange(1, 201)
    for p in (0.5, 0.99):
        counts = np.cumsum(rng.binomial(100, p, size=(2000, 200)), axis=1)
        seq = np.array([sequential_ranks(int(n), p, 0.05, C) for n in ns])
        fixed = np.array([fixed_ranks(int(n), p, 0.05) for n in ns])
        # Q_p in [X_(lo), X_(hi)) exactly when lo <= S <= hi - 1.
        seq_miss = ((counts < seq[:, 0]) | (counts > seq[:, 1] - 1)).any(axis=1)
        fixed_miss = ((counts < fixed[:, 0]) | (counts > fixed[:, 1] - 1)).any(axis=1)
        k = int(seq_miss.sum())
        lo, hi = wilson(k, seq_miss.size)
        assert hi <= 0.05, f"p{p * 100:g}: always-valid ranks missed in {k}/2000 (99% CI {lo:.3f}-{hi:.3f})"
        assert fixed_miss.mean() > 0.25  # peeking at fixed-n intervals fails, as it should


def test_sequential_ranks_are_wider_than_fixed_and_open_while_data_is_short() -> None:
    assert sequential_ranks(10, 0.99, 0.05, C) == (0, 11)  # ten values say nothing of the p99
    lo_s, hi_s = sequential_ranks(10_000, 0.99, 0.05, C)
    lo_f, hi_f = fixed_ranks(10_000, 0.99, 0.05)
    assert lo_s <= lo_f < 9900 < hi_f <= hi_s


def test_histogram_intervals_cover_the_true_quantiles_of_heavy_tailed_latency() -> None:
    rng = np.random.default_rng(3)
    # Pareto with shape 1.5: infinite variance, where a mean says little; scale 5 ms.
    values = 0.005 * (1 + rng.pareto(1.5, size=20_000))
    true = {p: 0.005 * (1 - p) ** (-1 / 1.5) for p in (0.5, 0.99)}
    h = histogram_of(values)
    assert h.n == 20_000
    for p, q in true.items():
        assert h.quantile(p) == pytest.approx(float(np.quantile(values, p)), rel=0.011)
        assert h.interval(p, 0.05, C).contains(q)
        assert h.fixed_interval(p, 0.05).contains(q)
    assert LatencyHistogram.of({}).n == 0 and math.isnan(LatencyHistogram.of({}).quantile(0.5))


def test_a_slower_candidate_shows_in_the_p99_ratio() -> None:
    rng = np.random.default_rng(4)
    control = histogram_of(rng.lognormal(math.log(0.02), 0.5, size=20_000))
    slow = histogram_of(1.6 * rng.lognormal(math.log(0.02), 0.5, size=3_000))
    same = histogram_of(rng.lognormal(math.log(0.02), 0.5, size=5_000))
    r = ratio_interval(control, slow, 0.99, 0.05, C)
    assert r.contains(1.6) and r.lower > 1.25
    p = ratio_p_value(control, slow, 0.99, 1.25, C, above=True)
    assert 1e-12 < p < 0.01
    assert ratio_interval(control, slow, 0.99, p * 1.01, C).lower > 1.25  # p is where the interval crosses
    assert ratio_interval(control, slow, 0.99, p * 0.99, C).lower <= 1.25
    assert ratio_p_value(control, same, 0.99, 1.25, C, above=True) == 1.0
    assert ratio_p_value(control, same, 0.99, 1.25, C, above=False) < 0.05  # shown no worse than 1.25
    assert ratio_interval(control, LatencyHistogram.of({}), 0.99, 0.05, C).upper == math.inf


def test_buckets_of_many_is_bucket_of_each() -> None:
    rng = np.random.default_rng(5)
    values = np.concatenate(
        [
            np.exp(rng.uniform(np.log(1e-7), np.log(100.0), 20_000)),  # 100 ns to 100 s
            [0.0, MIN_VALUE, MIN_VALUE * GROWTH, -1.0, float("nan")],  # the edges, and what bucket_of folds into 0
            [MIN_VALUE * GROWTH**b for b in range(1, 2000, 37)],  # exact bucket edges
        ]
    )
    assert buckets_of(values).tolist() == [bucket_of(float(v)) for v in values]
