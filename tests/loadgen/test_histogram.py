"""The latency histogram reads any quantile back within 0.1% of the exact order statistic."""

from __future__ import annotations

import math

import numpy as np
import pytest

from leanserve.loadgen.histogram import PRECISION, Histogram


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_quantiles_within_a_thousandth_of_the_exact_order_statistic(seed: int) -> None:
    rng = np.random.default_rng(seed)
    # Heavy-tailed, from microseconds to seconds: what latencies look like.
    values = rng.lognormal(mean=math.log(0.002), sigma=1.5, size=50_000)
    h = Histogram.of(values)
    ordered = np.sort(values)
    for q in (0.001, 0.1, 0.5, 0.9, 0.99, 0.999, 0.9999):
        exact = ordered[max(1, math.ceil(q * len(values))) - 1]
        assert abs(h.quantile(q) - exact) <= PRECISION * exact, q
    assert h.quantile(1.0) == values.max() and h.min == values.min()
    assert h.count == len(values) and h.mean == pytest.approx(values.mean())


def test_windows_merge_to_the_histogram_of_all() -> None:
    rng = np.random.default_rng(3)
    parts = [rng.exponential(0.001, 1000) for _ in range(4)]
    merged = Histogram()
    for part in parts:
        merged.merge(Histogram.of(part))
    whole = Histogram.of(np.concatenate(parts))
    assert np.array_equal(merged.counts, whole.counts)
    assert merged.quantiles_ms((0.5, 0.99)) == whole.quantiles_ms((0.5, 0.99))


def test_out_of_range_and_empty() -> None:
    assert math.isnan(Histogram().quantile(0.5))
    h = Histogram.of([1e-9, 7200.0])  # below and above the range: min and max stay exact
    assert h.quantile(0.0) == 1e-9 and h.quantile(1.0) == 7200.0
    assert h.quantiles_ms((0.5,)) == [pytest.approx(1e-3, rel=PRECISION)]  # the lowest bucket, in ms
