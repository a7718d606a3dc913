"""Persistence of experiments: an interface, and SQLite (WAL) behind it.

The server records an outcome per request on its event loop, so a write must cost a dictionary
update, not a disk write. :class:`SqliteStore` adds each write to an in-memory :class:`Tally`
(sums, so memory stays bounded whatever the rate) and a background thread writes the tally in
one transaction every ``flush_interval_s`` (100 ms) or every ``flush_records`` records, and on
:meth:`~SqliteStore.close`. Counters are written as additions (``value = value + ?``), so
several processes may share one file: their writes add up.

What a crash can lose: the writes of the last flush interval. A clean ``close()`` loses nothing,
and a new store on the same file reads back everything: counts, latency buckets, responses
awaiting feedback, the phase and step, and the decision log.
"""

from __future__ import annotations

import json
import logging
import sqlite3
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Protocol

from .quantiles import bucket_of
from .records import (
    CONVERTED,
    ERRORS,
    EXPOSED,
    ORPHAN_FEEDBACK,
    REQUESTS,
    REWARD_SUM,
    REWARD_SUM_SQ,
    REWARDED,
    ExperimentState,
    FeedbackTotals,
    LoggedDecision,
    Snapshot,
    Tally,
)

log = logging.getLogger("leanserve.experiments")


class ExperimentStore(Protocol):
    """What an :class:`~.experiment.Experiment` needs kept. Writes may be buffered; reads see them."""

    def add(self, kind: str, arm: int, step: int, value: float = 1.0) -> None:
        """Add to a counter (see the kinds in :mod:`.records`)."""

    def record_outcome(self, arm: int, step: int, latency_s: float, ok: bool, key: str | None = None) -> None:
        """One answered request; ``key`` (a response id or a unit) makes it await feedback."""

    def feedback(self, key: str, reward: float) -> None:
        """Feedback for a recorded key; rewards for the same key add up."""

    def merge(self, tally: Tally, responses: Sequence[tuple[str, int, float]] = ()) -> None:
        """Add outcomes counted elsewhere (a :class:`~.experiment.Recorder`'s): sums, and the
        (key, arm, Unix time) of responses that await feedback."""

    def snapshot(self, decisions: int = 50) -> Snapshot:
        """Everything kept, the last ``decisions`` log entries included."""

    def state(self) -> ExperimentState: ...

    def set_state(self, state: ExperimentState) -> None:
        """Persist the phase and step at once (not buffered: what routing follows must survive)."""

    def log_decision(self, entry: LoggedDecision) -> None: ...

    def flush(self) -> None: ...

    def close(self) -> None: ...


_SCHEMA = """
CREATE TABLE IF NOT EXISTS counters (
    experiment TEXT NOT NULL, kind TEXT NOT NULL, arm INTEGER NOT NULL, step INTEGER NOT NULL,
    value REAL NOT NULL, PRIMARY KEY (experiment, kind, arm, step)) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS latency (
    experiment TEXT NOT NULL, arm INTEGER NOT NULL, bucket INTEGER NOT NULL, count INTEGER NOT NULL,
    PRIMARY KEY (experiment, arm, bucket)) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS responses (
    experiment TEXT NOT NULL, key TEXT NOT NULL, arm INTEGER NOT NULL, at REAL NOT NULL, reward REAL,
    PRIMARY KEY (experiment, key));
CREATE INDEX IF NOT EXISTS responses_by_time ON responses (experiment, at);
CREATE TABLE IF NOT EXISTS state (
    experiment TEXT PRIMARY KEY, phase TEXT NOT NULL, step INTEGER NOT NULL, winner INTEGER,
    arms TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS decisions (
    id INTEGER PRIMARY KEY AUTOINCREMENT, experiment TEXT NOT NULL, at REAL NOT NULL, action TEXT NOT NULL,
    rule TEXT NOT NULL, reason TEXT NOT NULL, arm INTEGER, figures TEXT NOT NULL);
CREATE INDEX IF NOT EXISTS decisions_by_experiment ON decisions (experiment, id);
"""

_ADD_COUNTER = (
    "INSERT INTO counters VALUES (?, ?, ?, ?, ?) "
    "ON CONFLICT (experiment, kind, arm, step) DO UPDATE SET value = value + excluded.value"
)
_ADD_LATENCY = (
    "INSERT INTO latency VALUES (?, ?, ?, ?) "
    "ON CONFLICT (experiment, arm, bucket) DO UPDATE SET count = count + excluded.count"
)


class SqliteStore:
    """One experiment's records in a SQLite file (several experiments and processes may share it)."""

    def __init__(
        self,
        path: Path | str,
        experiment: str,
        *,
        feedback_window_s: float = 86_400.0,
        flush_interval_s: float = 0.1,
        flush_records: int = 1000,
        busy_timeout_s: float = 10.0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.path = str(path)
        self.experiment = experiment
        self.feedback_window_s = feedback_window_s
        self.flush_interval_s = flush_interval_s
        self.flush_records = flush_records
        self._clock = clock
        # One connection, used by the flusher thread and by readers in turn under _db_lock;
        # autocommit mode, with explicit transactions around each batch.
        # busy_timeout_s: how long a write waits for another process's transaction on the file.
        self._db = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None, timeout=busy_timeout_s)
        self._db.execute("PRAGMA journal_mode=WAL")
        # NORMAL under WAL: a power cut may lose the last transactions, never corrupt the file.
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.executescript(_SCHEMA)
        self._db_lock = threading.Lock()
        # Writers (the event loop) and the flusher swap the pending batch under this lock; it is
        # held for dictionary updates only, never across I/O.
        self._pending_lock = threading.Lock()
        self._pending = Tally()
        self._responses: list[tuple[str, int, float]] = []  # (key, arm, at)
        self._feedback: list[tuple[str, float]] = []
        self._pending_records = 0
        self._last_expiry = 0.0
        self.flush_errors = 0
        self._wake = threading.Event()
        self._closed = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"leanserve-experiment-{experiment}", daemon=True)
        self._thread.start()

    # ---- writes: buffered ------------------------------------------------------------------

    # The two writes below run once or twice per request on a server's event loop: Tally.add and
    # Tally.observe are written out here (measured, the calls cost more than the updates).

    def add(self, kind: str, arm: int, step: int, value: float = 1.0) -> None:
        key = (kind, arm, step)
        with self._pending_lock:
            counters = self._pending.counters
            counters[key] = counters.get(key, 0.0) + value
            self._pending_records += 1
            if self._pending_records == self.flush_records:
                self._wake.set()

    def record_outcome(self, arm: int, step: int, latency_s: float, ok: bool, key: str | None = None) -> None:
        bucket = (arm, bucket_of(latency_s))
        requests = (REQUESTS, arm, step)
        at = self._clock() if key is not None else 0.0
        with self._pending_lock:
            pending = self._pending
            counters = pending.counters
            counters[requests] = counters.get(requests, 0.0) + 1.0
            if not ok:
                errors = (ERRORS, arm, step)
                counters[errors] = counters.get(errors, 0.0) + 1.0
            latency = pending.latency
            latency[bucket] = latency.get(bucket, 0) + 1
            if key is not None:
                self._responses.append((key, arm, at))
            self._pending_records += 1
            if self._pending_records == self.flush_records:
                self._wake.set()

    def merge(self, tally: Tally, responses: Sequence[tuple[str, int, float]] = ()) -> None:
        with self._pending_lock:
            self._pending.merge(tally)
            self._responses.extend(responses)
            self._pending_records += len(tally) + len(responses)
            if self._pending_records >= self.flush_records:
                self._wake.set()

    def feedback(self, key: str, reward: float) -> None:
        with self._pending_lock:
            self._feedback.append((key, float(reward)))
            self._count_one()

    def _count_one(self) -> None:
        self._pending_records += 1
        if self._pending_records == self.flush_records:
            self._wake.set()

    # ---- the flusher ---------------------------------------------------------------------------

    def _run(self) -> None:
        while not self._closed.is_set():
            self._wake.wait(self.flush_interval_s)
            self._wake.clear()
            try:
                self.flush()
            except sqlite3.Error:
                # The batch went back into the pending one (see flush); the next round retries.
                self.flush_errors += 1
                log.exception("experiment %s: writing to %s failed; retrying", self.experiment, self.path)

    def flush(self) -> None:
        """Write everything pending in one transaction; on failure it stays pending."""
        # _db_lock is taken before the swap so that batches reach the file in the order they
        # were taken: feedback swapped out later must never be written before its response.
        with self._db_lock:
            with self._pending_lock:
                batch, responses, feedback = self._pending, self._responses, self._feedback
                self._pending, self._responses, self._feedback = Tally(), [], []
                self._pending_records = 0
            now = self._clock()
            expire = now - self._last_expiry >= min(60.0, self.feedback_window_s)
            if not (batch or responses or feedback or expire):
                return
            try:
                self._db.execute("BEGIN IMMEDIATE")
                orphans = self._write(batch, responses, feedback)
                if orphans:
                    self._db.execute(_ADD_COUNTER, (self.experiment, ORPHAN_FEEDBACK, 0, 0, float(orphans)))
                if expire:
                    self._expire(now - self.feedback_window_s)
                self._db.execute("COMMIT")
            except BaseException:
                if self._db.in_transaction:
                    self._db.execute("ROLLBACK")
                with self._pending_lock:  # back in front of whatever arrived meanwhile
                    batch.merge(self._pending)
                    self._pending = batch
                    self._responses = responses + self._responses
                    self._feedback = feedback + self._feedback
                raise
            if expire:
                self._last_expiry = now

    def _write(
        self, batch: Tally, responses: Sequence[tuple[str, int, float]], feedback: Sequence[tuple[str, float]]
    ) -> int:
        e = self.experiment
        db = self._db
        db.executemany(_ADD_COUNTER, [(e, k, a, s, v) for (k, a, s), v in batch.counters.items()])
        db.executemany(_ADD_LATENCY, [(e, a, b, c) for (a, b), c in batch.latency.items()])
        # The first record of a key wins: a unit keeps the arm it was first counted on.
        db.executemany(
            "INSERT OR IGNORE INTO responses (experiment, key, arm, at) VALUES (?, ?, ?, ?)",
            [(e, k, a, t) for k, a, t in responses],
        )
        orphans = 0
        for key, reward in feedback:  # after the inserts: feedback may follow its response closely
            cur = db.execute(
                "UPDATE responses SET reward = coalesce(reward, 0) + ? WHERE experiment = ? AND key = ?",
                (reward, e, key),
            )
            orphans += cur.rowcount == 0
        return orphans

    def _expire(self, before: float) -> None:
        """Fold responses older than the feedback window into per-arm counters, and drop them."""
        e = self.experiment
        rows = self._db.execute(_FEEDBACK_TOTALS + " AND at < ? GROUP BY arm", (e, before)).fetchall()
        for arm, exposed, rewarded, total, total_sq, converted in rows:
            for kind, value in (
                (EXPOSED, exposed),
                (REWARDED, rewarded),
                (REWARD_SUM, total),
                (REWARD_SUM_SQ, total_sq),
                (CONVERTED, converted),
            ):
                self._db.execute(_ADD_COUNTER, (e, kind, arm, 0, float(value)))
        self._db.execute("DELETE FROM responses WHERE experiment = ? AND at < ?", (e, before))

    # ---- reads ---------------------------------------------------------------------------------

    def snapshot(self, decisions: int = 50) -> Snapshot:
        self.flush()
        e = self.experiment
        with self._db_lock:
            db = self._db
            db.execute("BEGIN")  # one consistent read across the tables
            try:
                tally = Tally()
                for kind, arm, step, value in db.execute(
                    "SELECT kind, arm, step, value FROM counters WHERE experiment = ?", (e,)
                ):
                    tally.counters[(kind, arm, step)] = value
                for arm, bucket, count in db.execute(
                    "SELECT arm, bucket, count FROM latency WHERE experiment = ?", (e,)
                ):
                    tally.latency[(arm, bucket)] = count
                live = db.execute(_FEEDBACK_TOTALS + " GROUP BY arm", (e,)).fetchall()
                state = self._read_state()
                logged = db.execute(
                    "SELECT at, action, rule, reason, arm, figures FROM decisions WHERE experiment = ? "
                    "ORDER BY id DESC LIMIT ?",
                    (e, decisions),
                ).fetchall()
            finally:
                db.execute("COMMIT")
        feedback: dict[int, FeedbackTotals] = {}
        arms = {a for (_, a, _) in tally.counters} | {row[0] for row in live}
        for arm in arms:
            folded = FeedbackTotals(
                int(tally.count(EXPOSED, arm)),
                int(tally.count(REWARDED, arm)),
                tally.count(REWARD_SUM, arm),
                tally.count(REWARD_SUM_SQ, arm),
                int(tally.count(CONVERTED, arm)),
            )
            feedback[arm] = folded
        for arm, exposed, rewarded, total, total_sq, converted in live:
            feedback[arm] = feedback.get(arm, FeedbackTotals()) + FeedbackTotals(
                int(exposed), int(rewarded), float(total), float(total_sq), int(converted)
            )
        entries = tuple(
            LoggedDecision(at, action, rule, reason, arm, json.loads(figures))
            for at, action, rule, reason, arm, figures in reversed(logged)
        )
        return Snapshot(tally, feedback, state, entries)

    def _read_state(self) -> ExperimentState:
        row = self._db.execute(
            "SELECT phase, step, winner, arms FROM state WHERE experiment = ?", (self.experiment,)
        ).fetchone()
        if row is None:
            return ExperimentState()
        phase, step, winner, arms = row
        return ExperimentState(phase, step, winner, tuple(json.loads(arms)))

    def state(self) -> ExperimentState:
        with self._db_lock:
            return self._read_state()

    def set_state(self, state: ExperimentState) -> None:
        with self._db_lock:
            self._db.execute(
                "INSERT OR REPLACE INTO state VALUES (?, ?, ?, ?, ?)",
                (self.experiment, state.phase, state.step, state.winner, json.dumps(list(state.arms))),
            )

    def log_decision(self, entry: LoggedDecision) -> None:
        figures = json.dumps(entry.figures, allow_nan=False, default=_jsonable)
        with self._db_lock:
            self._db.execute(
                "INSERT INTO decisions (experiment, at, action, rule, reason, arm, figures) "
                "VALUES (?, ?, ?, ?, ?, ?, ?)",
                (self.experiment, entry.at, entry.action, entry.rule, entry.reason, entry.arm, figures),
            )

    def close(self) -> None:
        """Stop the flusher, write what is pending, close the file. Safe to call twice."""
        if self._closed.is_set():
            return
        self._closed.set()
        self._wake.set()
        self._thread.join()
        try:
            self.flush()
        finally:
            with self._db_lock:
                self._db.close()

    def __enter__(self) -> SqliteStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


# Per arm: responses awaiting or past feedback, how many got some, reward sums, conversions.
_FEEDBACK_TOTALS = (
    "SELECT arm, count(*), count(reward), total(reward), total(reward * reward), "
    "total(reward > 0) FROM responses WHERE experiment = ?"
)


def _jsonable(value: Any) -> Any:
    """numpy scalars and tuples in decision figures, as JSON."""
    if hasattr(value, "item"):
        return value.item()
    raise TypeError(f"decision figures hold {type(value).__name__}, which JSON cannot carry")
