"""Measurement windows: stability over the last three, when to stop, confidence intervals."""

from __future__ import annotations

import math

import pytest

from leanserve.loadgen.windows import Plan, Window, agree, mean_interval, measure_another, stable


def w(throughput: float, p99: float = 1.0) -> Window:
    return Window(1.0, int(throughput), int(throughput), throughput, p99, 0.2)


def test_agree_within_ten_percent_of_the_mean() -> None:
    assert agree([100, 105, 95])
    assert not agree([100, 120, 90])
    assert agree([0, 0, 0]) and not agree([0, 0, 1])
    assert not agree([1.0, math.nan, 1.0])


def test_stable_needs_three_windows_agreeing_on_throughput_and_p99() -> None:
    assert not stable([w(100), w(100)])
    assert stable([w(50), w(100), w(102), w(98)])  # only the last three count
    assert not stable([w(100), w(100, p99=1.0), w(100, p99=2.0)])


def test_plan_splits_the_duration_and_allows_twice_as_many() -> None:
    plan = Plan.for_duration(20.0)
    assert (plan.window_s, plan.planned, plan.maximum) == (5.0, 4, 8)
    assert Plan.for_duration(1.0, window_s=0.5).planned == 3  # never fewer than three
    assert Plan.for_duration(10.0, window_s=2.0, maximum=6) == Plan(2.0, 5, 6)


def test_measure_another_until_stable_or_the_maximum() -> None:
    plan = Plan(1.0, 3, 5)
    assert measure_another([w(100), w(100)], plan)  # fewer than planned
    assert not measure_another([w(100), w(100), w(100)], plan)  # planned and stable
    assert measure_another([w(50), w(100), w(150)], plan)  # planned, unstable: one more
    assert not measure_another([w(50), w(100), w(150), w(60), w(140)], plan)  # the maximum: said as unstable


def test_mean_interval() -> None:
    lo, hi = mean_interval([10.0, 12.0, 11.0])
    assert lo < 11.0 < hi and hi - lo == pytest.approx(2 * 4.303 * 1.0 / math.sqrt(3))
    assert mean_interval([5.0]) == (5.0, 5.0)
    assert mean_interval([1.0, 600.0, 1.0])[0] == 0.0  # never below zero
    assert all(math.isnan(x) for x in mean_interval([]))
