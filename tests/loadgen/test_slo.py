"""The SLO search as a pure policy, against a modelled server."""

from __future__ import annotations

from leanserve.loadgen.slo import Trial, best, next_rate


def modelled(rate: float, capacity: float = 1000.0) -> Trial:
    """p99 grows as the rate nears capacity (M/M/1-like); beyond it the server falls behind."""
    if rate >= capacity:
        return Trial(rate, 500.0, capacity, 0)
    return Trial(rate, 1.0 / (1 - rate / capacity), rate, 0)


def best_rate(trials: list[Trial], target_ms: float) -> float | None:
    top = best(trials, target_ms)
    return None if top is None else top.offered


def search(target_ms: float, start: float) -> list[Trial]:
    trials: list[Trial] = []
    while (rate := next_rate(trials, target_ms, start)) is not None:
        trials.append(modelled(rate))
    return trials


def test_finds_the_highest_rate_under_the_target_within_five_percent() -> None:
    # p99 = 1 / (1 - r/1000) <= 5 ms  <=>  r <= 800
    trials = search(5.0, start=100.0)
    best = best_rate(trials, 5.0)
    assert best is not None and 800 / 1.05 <= best <= 800
    assert len(trials) <= 12


def test_shrinks_when_the_start_already_misses() -> None:
    trials = search(5.0, start=3000.0)
    best = best_rate(trials, 5.0)
    assert trials[0].rate == 3000.0 and best is not None and 800 / 1.05 <= best <= 800


def test_the_offered_rate_is_what_counts() -> None:
    drawn_short = Trial(85.0, 1.0, 85.0, 0, rate=100.0)  # asked 100/s, 85 fell due, all answered
    assert drawn_short.meets(5.0) and best([drawn_short], 5.0) == drawn_short and drawn_short.rate == 100.0


def test_errors_or_falling_behind_are_misses() -> None:
    assert not Trial(100, 1.0, 100, errors=1).meets(5.0)
    assert not Trial(100, 1.0, 80, errors=0).meets(5.0)  # answered under 90% of the schedule
    assert Trial(100, 1.0, 95, errors=0).meets(5.0)


def test_gives_up_when_nothing_meets() -> None:
    trials: list[Trial] = []
    while (rate := next_rate(trials, 0.5, 1000.0)) is not None:
        trials.append(modelled(rate))
    assert best_rate(trials, 0.5) is None and len(trials) <= 12
    trials = []
    while (rate := next_rate(trials, 0.5, 1000.0, min_rate=10.0)) is not None:
        trials.append(modelled(rate))
    assert [t.rate for t in trials] == [1000.0, 250.0, 62.5, 15.625]  # not below 10/s
