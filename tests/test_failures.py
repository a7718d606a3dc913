"""The failure log: bounded, persistent, filterable, and written off the caller's thread."""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest

from leanserve.errors import InvalidInput, LeanserveError, ModelNotFound, ModelNotReady
from leanserve.failures import FailureLog, FailureQuery
from leanserve.router import RequestContext


@pytest.fixture
def failure_log(tmp_path: Path) -> Iterator[FailureLog]:
    log = FailureLog(tmp_path / "state" / "failures.sqlite3", max_entries=1000)
    log.open()
    yield log
    log.close()


def fail(log: FailureLog, model: str, status: int, request_id: str = "r", version: str = "1") -> None:
    error = {400: InvalidInput, 404: ModelNotFound, 503: ModelNotReady}.get(status, LeanserveError)(f"{model} failed")
    if type(error) is LeanserveError:
        error.status = status
    log.record(RequestContext(request_id, "10.0.0.7"), model, version, error)


def test_a_failure_is_kept_with_everything_but_the_body(failure_log: FailureLog) -> None:
    before = time.time()
    fail(failure_log, "digits", 400, request_id="req-1")
    [failure] = failure_log.query()
    assert (failure.model, failure.version, failure.status, failure.request_id) == ("digits", "1", 400, "req-1")
    assert failure.message == "digits failed" and failure.client == "10.0.0.7" and failure.arm == ""
    assert before <= failure.time <= time.time()
    as_json = failure.as_dict()
    assert as_json["time"].endswith("Z") and as_json["arm"] == ""
    assert set(as_json) == {"time", "timestamp", "model", "version", "status", "message", "request_id", "client", "arm"}


def test_newest_first_and_filters(failure_log: FailureLog) -> None:
    for i, (model, status) in enumerate([("a", 400), ("b", 404), ("a", 503), ("a", 400), ("b", 500)]):
        fail(failure_log, model, status, request_id=f"r{i}")

    def ids(**query: object) -> list[str]:
        return [f.request_id for f in failure_log.query(FailureQuery(**query))]  # type: ignore[arg-type]

    assert ids() == ["r4", "r3", "r2", "r1", "r0"]
    assert ids(model="a") == ["r3", "r2", "r0"]
    assert ids(status=400) == ["r3", "r0"]
    assert ids(status_class=5) == ["r4", "r2"]
    assert ids(status_class=4, model="b") == ["r1"]
    assert ids(limit=2) == ["r4", "r3"]
    assert ids(since=time.time() + 60) == []
    assert ids(since=time.time() - 60) == ids()


def test_oldest_entries_are_dropped_past_the_bound(tmp_path: Path) -> None:
    log = FailureLog(tmp_path / "f.sqlite3", max_entries=10)
    log.open()
    for i in range(25):
        fail(log, "m", 400, request_id=f"r{i}")
        if i % 7 == 0:
            log.flush()  # several batches, each trimming
    assert log.count() == 10
    assert [f.request_id for f in log.query()] == [f"r{i}" for i in range(24, 14, -1)]
    log.close()


def test_failures_survive_a_restart(tmp_path: Path) -> None:
    path = tmp_path / "f.sqlite3"
    first = FailureLog(path)
    first.open()
    fail(first, "m", 404, request_id="before-restart")
    first.close()  # writes what was buffered
    second = FailureLog(path)
    second.open()
    assert [f.request_id for f in second.query()] == ["before-restart"]
    fail(second, "m", 400, request_id="after-restart")
    assert [f.request_id for f in second.query()] == ["after-restart", "before-restart"]
    second.close()


def test_recording_never_waits_for_the_disk_and_the_writer_batches(tmp_path: Path) -> None:
    path = tmp_path / "f.sqlite3"
    log = FailureLog(path, flush_seconds=0.05)
    log.open()
    with log._lock:  # the writer is stuck (a slow disk): recording still returns at once
        start = time.perf_counter()
        for i in range(500):
            fail(log, "m", 400, request_id=f"r{i}")
        assert time.perf_counter() - start < 0.5
    deadline = time.monotonic() + 5
    with sqlite3.connect(path) as reader:  # another connection: sees only what the writer committed
        while reader.execute("SELECT count(*) FROM failures").fetchone()[0] < 500:
            assert time.monotonic() < deadline, "the writer thread did not flush the buffer"
            time.sleep(0.02)
    log.close()


def test_a_writer_far_behind_drops_and_counts_rather_than_grow(tmp_path: Path) -> None:
    log = FailureLog(tmp_path / "f.sqlite3", max_buffered=5)
    log.open()
    with log._lock:
        for _ in range(8):
            fail(log, "m", 400)
    assert log.dropped == 3
    assert log.count() == 5
    log.close()


def test_hostile_values_are_cut_to_size(failure_log: FailureLog) -> None:
    failure_log.record(RequestContext("i" * 500, "c" * 500), "m" * 5000, "v" * 500, InvalidInput("x" * 10_000))
    [failure] = failure_log.query()
    assert len(failure.model) == 256 and len(failure.request_id) == 128 and len(failure.message) == 2000
    assert len(failure.client) == 64 and len(failure.version) == 64


def test_in_memory_when_no_path(tmp_path: Path) -> None:
    log = FailureLog(None)
    log.open()
    fail(log, "m", 503)
    assert [f.status for f in log.query()] == [503]
    log.close()


def test_query_parameters_are_read_and_checked() -> None:
    assert FailureQuery.from_params({}) == FailureQuery()
    q = FailureQuery.from_params({"model": "digits", "status": "5xx", "since": "1700000000", "limit": "20"})
    assert q == FailureQuery("digits", None, 5, 1_700_000_000.0, 20)
    assert FailureQuery.from_params({"status": "404"}).status == 404
    iso = FailureQuery.from_params({"since": "2026-11-30T12:00:00Z"}).since
    assert iso == datetime(2026, 11, 30, 12, tzinfo=UTC).timestamp()
    assert FailureQuery.from_params({"since": "2026-11-30T12:00:00"}).since == iso  # naive reads as UTC
    for bad, fragment in [
        ({"status": "4x"}, "neither"),
        ({"status": "999"}, "neither"),
        ({"limit": "0"}, "limit"),
        ({"limit": "5000"}, "limit"),
        ({"since": "yesterday"}, "not a time"),
        ({"modle": "x"}, "unknown failure log parameter 'modle'"),
    ]:
        with pytest.raises(InvalidInput, match=fragment):
            FailureQuery.from_params(bad)


def test_a_flood_of_one_failure_is_logged_as_a_few_lines_and_a_count(
    failure_log: FailureLog, caplog: pytest.LogCaptureFixture
) -> None:
    from leanserve.failures import LINES_PER_KIND

    caplog.set_level("WARNING", logger="leanserve.failures")
    for i in range(200):
        fail(failure_log, "busy", 503, request_id=f"shed-{i}")
    fail(failure_log, "other", 503, request_id="lone")
    failure_log.flush()
    lines = [r.getMessage() for r in caplog.records if r.name == "leanserve.failures"]
    busy = [line for line in lines if line.startswith("503 busy/1")]
    more = sum(int(line.split(": ")[1].split()[0]) for line in busy if "more like these" in line)
    assert LINES_PER_KIND < len(busy) < 200  # at most a few lines per write batch, and a summary
    assert len(busy) - sum("more like these" in line for line in busy) + more == 200  # each one accounted for
    assert any("request lone" in line for line in lines)  # another model's failure is not hidden
    assert len(failure_log.query(FailureQuery(model="busy", limit=1000))) == 200  # all kept in the log itself
