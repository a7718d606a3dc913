"""Arrivals, load levels and the model mix."""

from __future__ import annotations

import numpy as np
import pytest

from leanserve.errors import UsageError
from leanserve.loadgen.schedule import Level, choices, gaps, parse_mix


def test_poisson_and_constant_gaps() -> None:
    poisson = gaps(200.0, "poisson", 20_000)
    assert poisson.mean() == pytest.approx(1 / 200, rel=0.03)
    assert poisson.std() == pytest.approx(1 / 200, rel=0.05)  # exponential: std equals the mean
    assert np.all(gaps(200.0, "constant", 10) == 1 / 200)


def test_zipf_mix_proportions() -> None:
    shares = parse_mix("zipf:1.1", 3)
    raw = [1, 2**-1.1, 3**-1.1]
    assert shares == pytest.approx([r / sum(raw) for r in raw])
    picked = choices(shares, 1 << 16)
    observed = np.bincount(picked, minlength=3) / len(picked)
    assert observed == pytest.approx(shares, abs=0.01)


def test_weighted_and_uniform_mix() -> None:
    assert parse_mix("weights:5,3,2", 3) == pytest.approx((0.5, 0.3, 0.2))
    assert parse_mix(None, 4) == (0.25,) * 4
    for bad in ("weights:1,2", "zipf:x", "fancy:1", "weights:0,0,0"):
        with pytest.raises(UsageError):
            parse_mix(bad, 3)


def test_levels() -> None:
    assert Level(concurrency=8).label == "c8" and Level(rate=200).label == "200/s poisson"
    for bad in ({}, {"concurrency": 1, "rate": 1.0}, {"concurrency": 0}, {"rate": -1.0}):
        with pytest.raises(UsageError):
            Level(**bad)  # type: ignore[arg-type]
