"""Per-version statistics: histograms in Prometheus' cumulative form, Triton's statistics shape."""

from __future__ import annotations

import json
import time

import pytest

from leanserve.stats import BATCH_SIZE_BUCKETS, LATENCY_BUCKETS, OUTCOMES, Duration, Histogram, ModelStats


def test_histogram_is_cumulative_with_inclusive_upper_bounds() -> None:
    h = Histogram((1, 2, 4))
    for value in (0.5, 1, 3, 100):  # 1 falls in the bucket "le 1": Prometheus' bounds are inclusive
        h.observe(value)
    assert h.counts == [2, 0, 1, 1]
    assert h.cumulative() == [("1.0", 2), ("2.0", 2), ("4.0", 3), ("+Inf", 4)]
    assert h.count == 4 and h.sum == pytest.approx(104.5)


def test_an_empty_histogram_reads_zero_everywhere() -> None:
    h = Histogram(LATENCY_BUCKETS)
    cumulative = h.cumulative()
    assert len(cumulative) == len(LATENCY_BUCKETS) + 1 and cumulative[-1] == ("+Inf", 0)
    assert all(n == 0 for _, n in cumulative) and h.count == 0 and h.sum == 0.0
    assert [bound for bound, _ in cumulative[:3]] == ["5e-05", "0.0001", "0.00025"]


def test_bucket_bounds_ascend() -> None:
    for buckets in (LATENCY_BUCKETS, BATCH_SIZE_BUCKETS):
        assert list(buckets) == sorted(set(buckets))


def test_duration_counts_and_sums_nanoseconds() -> None:
    d = Duration()
    d.add(0.0015)
    d.add(0.002, count=3)  # one batch of three
    assert d.as_dict() == {"count": 4, "ns": 3_500_000}


def test_requests_count_by_outcome_and_split_success_from_failure() -> None:
    stats = ModelStats("m", 2)
    stats.record_request("success", 0.004)
    stats.record_request("success", 0.006)
    stats.record_request("client_error", 0.001)
    stats.record_request("server_error", 0.5)
    assert stats.outcomes == {"success": 2, "client_error": 1, "server_error": 1}
    assert set(stats.outcomes) == set(OUTCOMES)
    assert stats.success.as_dict() == {"count": 2, "ns": 10_000_000}
    assert stats.fail.as_dict() == {"count": 2, "ns": 501_000_000}
    assert stats.request_seconds.count == 4


def test_failures_count_by_status_and_successes_read_as_200() -> None:
    stats = ModelStats("m", 1)
    stats.record_request("success", 0.001)
    stats.record_failure(400, 0.001)
    stats.record_failure(400, 0.001)
    stats.record_failure(503, 0.002)
    assert stats.responses_by_code() == {200: 1, 400: 2, 503: 1}
    assert stats.outcomes == {"success": 1, "client_error": 2, "server_error": 1}
    assert stats.fail.count == 3 and stats.request_seconds.count == 4


def test_queue_time_goes_to_the_duration_and_the_histogram() -> None:
    stats = ModelStats("m", 1)
    stats.record_queue(0.0002)
    assert stats.queue.as_dict() == {"count": 1, "ns": 200_000}
    assert stats.queue_seconds.cumulative()[:3] == [("5e-05", 0), ("0.0001", 0), ("0.00025", 1)]


def test_batches_count_rows_executions_and_time_per_batch_size() -> None:
    stats = ModelStats("m", 1)
    before = int(time.time() * 1000)
    stats.record_batch(3, 0.001)
    stats.record_batch(3, 0.003)
    stats.record_batch(1, 0.002)
    assert stats.execution_count == 3 and stats.inference_count == 7
    assert {size: d.as_dict() for size, d in stats.batch_compute.items()} == {
        3: {"count": 2, "ns": 4_000_000},
        1: {"count": 1, "ns": 2_000_000},
    }
    assert stats.compute_infer.as_dict() == {"count": 3, "ns": 6_000_000}
    assert stats.batch_size.cumulative()[:3] == [("1.0", 1), ("2.0", 1), ("4.0", 3)]
    assert before <= stats.last_inference_ms <= int(time.time() * 1000)


def test_triton_dict_has_tritons_shape_and_is_json() -> None:
    stats = ModelStats("m", 3)
    stats.memory_bytes = 4096
    stats.load_seconds = 0.1234567
    stats.record_request("success", 0.002)
    stats.record_queue(0.0001)
    stats.record_batch(4, 0.001)
    stats.record_batch(2, 0.001)
    d = json.loads(json.dumps(stats.triton_dict()))
    assert (d["name"], d["version"]) == ("m", "3")  # Triton sends the version as a string
    assert d["inference_count"] == 6 and d["execution_count"] == 2
    inference = d["inference_stats"]
    assert inference["success"] == {"count": 1, "ns": 2_000_000}
    assert inference["queue"] == {"count": 1, "ns": 100_000}
    assert inference["compute_infer"] == {"count": 2, "ns": 2_000_000}
    assert set(inference) == {
        "success",
        "fail",
        "queue",
        "compute_input",
        "compute_infer",
        "compute_output",
        "cache_hit",
        "cache_miss",
    }
    assert [b["batch_size"] for b in d["batch_stats"]] == [2, 4]  # ascending, one entry per size seen
    assert d["batch_stats"][1]["compute_infer"] == {"count": 1, "ns": 1_000_000}
    assert d["memory_usage"] == [{"type": "CPU", "id": 0, "byte_size": 4096}]
    assert d["load_seconds"] == 0.123457 and d["outcomes"]["success"] == 1


def test_the_inlined_recorders_count_as_the_general_ones() -> None:
    general, inlined = ModelStats("m", 1), ModelStats("m", 1)
    for seconds in (0.00004, 0.0001, 0.003, 7.0, 20.0):
        general.record_request("success", seconds)
        inlined.record_success(seconds)
    waits = [0.0, 0.00005, 0.0002, 0.01]
    for seconds in waits:
        general.record_queue(seconds)
    inlined.record_queue_waits(waits)
    inlined.record_queue_waits([])
    assert inlined.outcomes == general.outcomes and inlined.success == general.success
    assert inlined.request_seconds.cumulative() == general.request_seconds.cumulative()
    assert inlined.request_seconds.sum == pytest.approx(general.request_seconds.sum)
    assert inlined.queue_seconds.cumulative() == general.queue_seconds.cumulative()
    assert inlined.queue.count == general.queue.count == 4
    assert abs(inlined.queue.ns - general.queue.ns) <= len(waits)  # rounded once per batch, not per request


def test_http_requests_are_what_the_other_protocols_leave() -> None:
    """HTTP pays nothing for the protocol label: its counts are derived when they are read."""
    s = ModelStats("m", 1)
    for _ in range(5):
        s.record_request("success", 0.001)
    s.record_failure(400, 0.001)
    s.record_failure(503, 0.001)
    s.count_protocol("grpc", "success")
    s.count_protocol("grpc", "success")
    s.count_protocol("shadow", "success")
    s.count_protocol("grpc", "client_error")
    assert s.outcomes_by_protocol() == {
        ("http", "success"): 2,
        ("http", "client_error"): 0,
        ("http", "server_error"): 1,
        ("grpc", "success"): 2,
        ("grpc", "client_error"): 1,
        ("shadow", "success"): 1,
    }
    assert sum(s.outcomes_by_protocol().values()) == sum(s.outcomes.values())
