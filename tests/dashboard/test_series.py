"""The dashboard's arithmetic: quantiles from bucket deltas, rates, and samples that survive a hot swap."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from leanserve.dashboard.series import Counters, Sampler, growth, histogram_quantile, point, take
from leanserve.registry import ModelRegistry
from leanserve.stats import LATENCY_BUCKETS, ModelStats
from tests.fixtures.onnx_models import write_marked_model


def test_quantiles_interpolate_inside_the_bucket_as_prometheus_does() -> None:
    bounds = (1.0, 2.0, 4.0)
    assert histogram_quantile(0.5, bounds, [2, 0, 1, 1]) == 1.0  # rank 2 ends the first bucket
    assert histogram_quantile(0.25, bounds, [2, 0, 1, 1]) == 0.5  # the first bucket starts at 0
    assert histogram_quantile(0.6, bounds, [2, 0, 2, 0]) == pytest.approx(2.0 + 2.0 * 0.4 / 2)
    assert histogram_quantile(0.99, bounds, [0, 0, 0, 5]) == 4.0  # +Inf answers the highest finite bound
    assert histogram_quantile(0.5, bounds, [0, 0, 0, 0]) is None


def test_a_point_reads_the_growth_of_the_counters() -> None:
    stats = ModelStats("m", 1)
    before = Counters.of(stats)
    for _ in range(98):
        stats.record_request("success", 0.002)  # in the bucket (0.001, 0.0025]
    stats.record_failure(400, 0.0004)
    stats.record_failure(503, 2.0)
    stats.record_queue(0.001)
    stats.record_queue(0.003)
    stats.record_batch(4, 0.010)
    p = point(Counters.of(stats) - before, 10.0)
    assert p.rps == pytest.approx(10.0)
    assert p.error_rate == pytest.approx(0.02)
    assert p.p50_ms is not None and 1.0 < p.p50_ms <= 2.5
    assert p.p99_ms == pytest.approx(2.5)  # rank 99 of 100 ends the (1 ms, 2.5 ms] bucket; the 2 s one is past it
    assert p.queue_ms == pytest.approx(2.0)
    assert p.compute_ms == pytest.approx(10.0)


def test_nothing_to_measure_reads_none_not_zero() -> None:
    p = point(Counters(), 2.0)
    assert p.rps == 0.0 and p.error_rate is None and p.p50_ms is None and p.queue_ms is None
    assert len(Counters().request_buckets) == len(LATENCY_BUCKETS) + 1


def test_growth_sums_versions_and_a_replaced_version_starts_from_zero() -> None:
    v1, v2 = ModelStats("m", 1), ModelStats("m", 2)
    for _ in range(5):
        v1.record_request("success", 0.001)
    before = take([v1, v2])
    v1.record_request("success", 0.001)
    v2.record_request("success", 0.001)
    assert growth(before, take([v1, v2]))["m"].requests == 2
    replaced = ModelStats("m", 1)  # new files for version 1: new statistics, fewer requests than before
    replaced.record_request("success", 0.001)
    assert growth(before, take([replaced, v2]))["m"].requests == 2  # not 1 - 5 + 1


@pytest.fixture
async def registry(tmp_path: Path) -> AsyncIterator[ModelRegistry]:
    write_marked_model(tmp_path / "m" / "1" / "model.onnx", 1.0, weight_mib=0.05)
    registry = ModelRegistry(tmp_path)
    await registry.load_all()
    yield registry
    await registry.close()


async def test_the_sampler_keeps_a_bounded_history_of_points(registry: ModelRegistry) -> None:
    sampler = Sampler(registry, every_seconds=1.0, keep=3)
    stats = registry.describe("m", None).stats
    sampler.sample(now=100.0)
    assert sampler.samples[-1].points == {}  # nothing to compare with yet
    for step in range(1, 5):
        for _ in range(step * 10):
            stats.record_request("success", 0.001)
        sampler.sample(now=100.0 + step)
    assert len(sampler.samples) == 3
    assert [s.points["m"].rps for s in sampler.samples] == [20.0, 30.0, 40.0]
    assert sampler.recent(30.0)["m"].rps == pytest.approx(35.0)  # over what it kept: 70 requests in 2 s
    with pytest.raises(ValueError):
        Sampler(registry, every_seconds=0)
