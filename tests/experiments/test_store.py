"""The SQLite store: buffered writes, nothing lost across a restart, feedback finds its arm."""

from __future__ import annotations

import sqlite3
import time
from pathlib import Path

import pytest

from leanserve.experiments.quantiles import LatencyHistogram
from leanserve.experiments.records import (
    ASSIGNED,
    ERRORS,
    ORPHAN_FEEDBACK,
    REQUESTS,
    ExperimentState,
    FeedbackTotals,
    LoggedDecision,
)
from leanserve.experiments.store import SqliteStore


class Clock:
    def __init__(self, now: float = 1_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def rows(path: Path, table: str) -> int:
    with sqlite3.connect(path) as db:
        return int(db.execute(f"SELECT count(*) FROM {table}").fetchone()[0])


def test_a_restart_loses_nothing(tmp_path: Path) -> None:
    path = tmp_path / "experiments.db"
    store = SqliteStore(path, "exp")
    for i in range(300):
        store.add(ASSIGNED, i % 2, 0)
        store.record_outcome(i % 2, 0, 0.010 * (1 + i % 7), ok=i % 10 != 0, key=f"r{i}")
    store.feedback("r4", 2.5)
    store.set_state(ExperimentState("running", 2, None, ("m:1", "m:2")))
    store.log_decision(LoggedDecision(5.0, "advance", "advance", "to step 3", 1, {"samples": [150, 150]}))
    before = store.snapshot()
    store.close()
    store.close()  # twice is fine

    again = SqliteStore(path, "exp")
    after = again.snapshot()
    again.close()
    assert after.tally.counters == before.tally.counters and after.tally.latency == before.tally.latency
    assert after.tally.count(ASSIGNED, 0) == 150 and after.tally.count(REQUESTS, 1) == 150
    assert after.tally.count(ERRORS, 0) == 30  # i = 0, 10, 20, ... all even
    assert after.state == ExperimentState("running", 2, None, ("m:1", "m:2"))
    assert after.feedback[0] == FeedbackTotals(exposed=150, rewarded=1, total=2.5, total_sq=6.25, converted=1)
    [entry] = after.decisions
    assert (entry.action, entry.reason, entry.arm) == ("advance", "to step 3", 1)
    assert entry.figures == {"samples": [150, 150]}
    h = LatencyHistogram.of(after.tally.buckets(0))
    assert h.n == 150 and 0.009 < h.quantile(0.01) < 0.0101


def test_feedback_keyed_by_response_id_lands_on_the_right_arm(tmp_path: Path) -> None:
    with SqliteStore(tmp_path / "e.db", "exp") as store:
        store.record_outcome(0, 0, 0.01, True, key="req-a")
        store.record_outcome(1, 0, 0.01, True, key="req-b")
        store.record_outcome(1, 0, 0.01, True, key="req-c")
        store.flush()
        store.feedback("req-b", 1.0)
        store.feedback("req-b", 0.5)  # rewards for one key add up
        store.feedback("req-zzz", 1.0)  # never recorded
        snap = store.snapshot()
    assert snap.feedback[1] == FeedbackTotals(exposed=2, rewarded=1, total=1.5, total_sq=2.25, converted=1)
    assert snap.feedback[0] == FeedbackTotals(exposed=1)
    assert snap.tally.count(ORPHAN_FEEDBACK, 0) == 1


def test_feedback_in_the_same_batch_as_its_response_is_not_lost(tmp_path: Path) -> None:
    with SqliteStore(tmp_path / "e.db", "exp", flush_interval_s=60) as store:
        store.record_outcome(1, 0, 0.01, True, key="unit-7")
        store.feedback("unit-7", 1.0)
        store.record_outcome(1, 0, 0.01, True, key="unit-7")  # the same unit again: still one exposure
        snap = store.snapshot()
    assert snap.feedback[1] == FeedbackTotals(exposed=1, rewarded=1, total=1.0, total_sq=1.0, converted=1)


def test_writes_are_buffered_and_flushed_by_the_background_thread(tmp_path: Path) -> None:
    path = tmp_path / "e.db"
    with SqliteStore(path, "exp", flush_interval_s=0.05, flush_records=10_000) as store:
        for _ in range(10):
            store.record_outcome(0, 0, 0.01, True)
        assert rows(path, "latency") == 0  # nothing written on the caller's thread
        deadline = time.monotonic() + 5
        while rows(path, "latency") == 0 and time.monotonic() < deadline:
            time.sleep(0.01)
        assert rows(path, "latency") == 1


def test_a_full_batch_wakes_the_flusher_before_its_interval(tmp_path: Path) -> None:
    path = tmp_path / "e.db"
    with SqliteStore(path, "exp", flush_interval_s=60, flush_records=100) as store:
        for _ in range(100):
            store.add(ASSIGNED, 0, 0)
        deadline = time.monotonic() + 5
        while rows(path, "counters") == 0 and time.monotonic() < deadline:
            time.sleep(0.01)
        assert rows(path, "counters") == 1


def test_responses_past_the_feedback_window_are_folded_into_totals(tmp_path: Path) -> None:
    clock = Clock()
    path = tmp_path / "e.db"
    with SqliteStore(path, "exp", feedback_window_s=100, flush_interval_s=60, clock=clock) as store:
        for i in range(10):
            store.record_outcome(i % 2, 0, 0.01, True, key=f"r{i}")
        store.feedback("r1", 3.0)
        before = store.snapshot()
        clock.now += 500  # past the window: the next flush folds them
        store.flush()
        assert rows(path, "responses") == 0
        store.feedback("r3", 1.0)  # too late: counted as orphaned, not silently lost
        after = store.snapshot()
    assert after.feedback == before.feedback
    assert after.feedback[1] == FeedbackTotals(exposed=5, rewarded=1, total=3.0, total_sq=9.0, converted=1)
    assert after.tally.count(ORPHAN_FEEDBACK, 0) == 1


def test_experiments_sharing_a_file_keep_apart_and_writers_of_one_add_up(tmp_path: Path) -> None:
    path = tmp_path / "e.db"
    a, b, a_again = SqliteStore(path, "a"), SqliteStore(path, "b"), SqliteStore(path, "a")
    a.add(ASSIGNED, 0, 0, 3)
    a_again.add(ASSIGNED, 0, 0, 4)  # another process serving the same experiment
    b.add(ASSIGNED, 0, 0, 100)
    for s in (a, b, a_again):
        s.flush()
    assert a.snapshot().tally.count(ASSIGNED, 0) == 7
    assert b.snapshot().tally.count(ASSIGNED, 0) == 100
    for s in (a, b, a_again):
        s.close()


def test_a_failed_write_keeps_the_batch_pending(tmp_path: Path) -> None:
    path = tmp_path / "e.db"
    with SqliteStore(path, "exp", flush_interval_s=60, busy_timeout_s=0) as store:
        store.record_outcome(0, 0, 0.01, True, key="k")
        blocker = sqlite3.connect(path, timeout=0)
        blocker.execute("BEGIN EXCLUSIVE")  # another writer holds the file
        with pytest.raises(sqlite3.OperationalError):
            store.flush()
        blocker.execute("ROLLBACK")
        blocker.close()
        snap = store.snapshot()
    assert snap.tally.count(REQUESTS, 0) == 1 and snap.feedback[0].exposed == 1
