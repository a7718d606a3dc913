"""Assignment is pure: a unit's point never changes, splits follow their weights, canaries only move units forward."""

from __future__ import annotations

import random

import numpy as np
import pytest

from leanserve.experiments.assignment import Mirror, Split, canary_split, choose, mirror, only, unit_point


def test_a_units_point_is_stable_and_independent_of_the_process() -> None:
    # Fixed values: blake2b, not Python's per-process salted hash(); a change here reshuffles
    # every running experiment, so it must be deliberate.
    assert unit_point("exp", "user-1") == 0.4667432548885148
    assert unit_point("exp", "user-2") != unit_point("exp", "user-1")
    assert unit_point("other", "user-1") != unit_point("exp", "user-1")  # a new salt reshuffles
    assert unit_point("ab", "c") != unit_point("a", "bc")  # the salt's boundary is part of the hash


def test_points_are_uniform() -> None:
    points = np.array([unit_point("s", f"u{i}") for i in range(20_000)])
    assert points.min() >= 0 and points.max() < 1
    counts, _ = np.histogram(points, bins=10, range=(0, 1))
    # 2,000 expected per bin, sd 42: +-200 is nearly 5 sd.
    assert np.all(np.abs(counts - 2000) < 200), counts


def test_a_split_follows_its_weights() -> None:
    split = Split.from_weights([2, 1, 1])
    assert split.share(0) == pytest.approx(0.5) and split.share(2) == pytest.approx(0.25)
    arms = np.array([choose(split, "salt", f"unit-{i}", random.Random(0)) for i in range(40_000)])
    shares = np.bincount(arms, minlength=3) / arms.size
    # sd of a share at n = 40,000 is at most 0.0025: 0.01 is 4 sd.
    assert shares == pytest.approx([0.5, 0.25, 0.25], abs=0.01)


def test_without_a_unit_the_injected_random_source_decides() -> None:
    split = Split.from_weights([1, 1])
    a = [choose(split, "s", None, random.Random(7)) for _ in range(5)]
    b = [choose(split, "s", None, random.Random(7)) for _ in range(5)]
    assert a == b
    rng = random.Random(1)
    arms = [choose(split, "s", None, rng) for _ in range(10_000)]
    assert sum(arms) / len(arms) == pytest.approx(0.5, abs=0.03)


def test_edges_and_empty_slices() -> None:
    split = Split.from_weights([1, 0, 1])
    assert split.arm_at(0.0) == 0 and split.arm_at(0.4999) == 0 and split.arm_at(0.5) == 2
    assert split.arm_at(0.9999999) == 2 and split.share(1) == 0
    assert {only(1, 3).arm_at(x) for x in (0.0, 0.5, 0.999)} == {1}
    # A unit's hash can round up to exactly 1.0: it falls in the last slice, not past it.
    assert split.arm_at(1.0) == 2 and canary_split(5).arm_at(1.0) == 0
    assert split.slots == (0, 1, 2, 2)
    with pytest.raises(ValueError, match="positive sum"):
        Split.from_weights([0, 0])
    with pytest.raises(ValueError, match="once"):
        Split.from_weights([1, 1], order=[0, 0])


def test_a_canary_only_ever_moves_units_from_control_to_candidate() -> None:
    units = [f"u{i}" for i in range(5_000)]
    previous = [0] * len(units)
    for share in (1, 5, 25, 50, 100):
        split = canary_split(share)
        arms = [choose(split, "s", u, random.Random(0)) for u in units]
        assert all(now >= before for now, before in zip(arms, previous, strict=True))  # 0 -> 1 only
        assert sum(arms) / len(units) == pytest.approx(share / 100, abs=0.02)
        previous = arms
    assert split.share(1) == 1.0 and canary_split(0).share(0) == 1.0


def test_shadow_copies_are_sampled_then_shed_first_under_load() -> None:
    assert mirror(0.1, sample=0.5, candidate_in_flight=0, max_in_flight=4) is Mirror.SEND
    assert mirror(0.7, sample=0.5, candidate_in_flight=0, max_in_flight=4) is Mirror.SAMPLED_OUT
    assert mirror(0.1, sample=1.0, candidate_in_flight=4, max_in_flight=4) is Mirror.SHED
    assert mirror(0.1, sample=1.0, candidate_in_flight=3, max_in_flight=4) is Mirror.SEND
