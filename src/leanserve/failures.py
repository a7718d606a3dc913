"""The failure log: every failed inference request, in SQLite (WAL), so that it survives restarts.

Recording a failure is an append to an in-memory buffer on the event loop (the router calls
:meth:`FailureLog.record` on its error paths only). A writer thread turns the buffer into one
transaction at a time: it wakes on the first failure, collects whatever else fails in the next
``flush_seconds`` (or until ``flush_entries`` wait), writes them together and drops the oldest rows
past ``max_entries``. So a burst of bad requests costs the loop a few appends, never a disk write.
Readers (:meth:`FailureLog.query`) flush the buffer first, so they see every failure recorded
before they asked. No request body is stored: time, model, version, status, message, request id,
client address, and for a request through an experiment alias the arm that served it
(``alias/model:version``; a shadow copy's ends in `` shadow``).
"""

from __future__ import annotations

import contextlib
import logging
import sqlite3
import threading
import time
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Final

from .errors import InvalidInput, LeanserveError
from .router import RequestContext

log = logging.getLogger("leanserve.failures")

FILE_NAME: Final = "failures.sqlite3"
DEFAULT_MAX_ENTRIES: Final = 100_000
MAX_LIMIT: Final = 1000
# Per column, so that a hostile client cannot make one row large (model names come from URLs).
_MAX_MODEL, _MAX_VERSION, _MAX_MESSAGE, _MAX_ID, _MAX_CLIENT = 256, 64, 2000, 128, 64

_SCHEMA = """
CREATE TABLE IF NOT EXISTS failures (
    id INTEGER PRIMARY KEY,
    time REAL NOT NULL,
    model TEXT NOT NULL,
    version TEXT NOT NULL,
    status INTEGER NOT NULL,
    message TEXT NOT NULL,
    request_id TEXT NOT NULL,
    client TEXT NOT NULL,
    arm TEXT NOT NULL DEFAULT ''
);
CREATE INDEX IF NOT EXISTS failures_time ON failures (time);
"""
_COLUMNS = "time, model, version, status, message, request_id, client, arm"
# What the buffer holds, in _COLUMNS' order: built on the event loop, so a tuple, not a dataclass.
_Row = tuple[float, str, str, int, str, str, str, str]


@dataclass(frozen=True, slots=True)
class Failure:
    """One failed request as the log keeps it."""

    time: float  # Unix seconds
    model: str
    version: str  # the version that failed, or the one asked for, or "" when neither is known
    status: int
    message: str
    request_id: str
    client: str
    arm: str = ""  # through an experiment alias: "alias/model:version" of the arm that served it

    def as_dict(self) -> dict[str, object]:
        iso = datetime.fromtimestamp(self.time, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
        return {
            "time": iso,
            "timestamp": self.time,
            "model": self.model,
            "version": self.version,
            "status": self.status,
            "message": self.message,
            "request_id": self.request_id,
            "client": self.client,
            "arm": self.arm,
        }


@dataclass(frozen=True, slots=True)
class FailureQuery:
    """Which failures to read, newest first."""

    model: str | None = None
    status: int | None = None  # one status code ...
    status_class: int | None = None  # ... or a class: 4 for 4xx, 5 for 5xx
    since: float | None = None  # Unix seconds
    limit: int = 100

    @classmethod
    def from_params(cls, params: Mapping[str, str]) -> FailureQuery:
        """From ``?model=&status=&since=&limit=``.

        ``status`` is a code or ``4xx``/``5xx``; ``since`` is Unix seconds or ISO 8601; ``limit`` is 1 to 1000.
        """
        unknown = sorted(set(params) - {"model", "status", "since", "limit"})
        if unknown:
            raise InvalidInput(
                f"unknown failure log parameter {unknown[0]!r}", hint="filter with model, status, since and limit"
            )
        status = status_class = None
        raw_status = params.get("status", "").strip().lower()
        if raw_status in ("4xx", "5xx"):
            status_class = int(raw_status[0])
        elif raw_status:
            if not raw_status.isdigit() or not 100 <= int(raw_status) <= 599:
                raise InvalidInput(f"status {raw_status[:20]!r} is neither an HTTP status code nor 4xx or 5xx")
            status = int(raw_status)
        limit = params.get("limit", "100").strip()
        if not limit.isdigit() or not 1 <= int(limit) <= MAX_LIMIT:
            raise InvalidInput(f"limit {limit[:20]!r} is not a whole number from 1 to {MAX_LIMIT}")
        raw_since = params.get("since", "").strip()
        return cls(params.get("model") or None, status, status_class, _parse_time(raw_since), int(limit))


def _parse_time(raw: str) -> float | None:
    if not raw:
        return None
    try:
        return float(raw)
    except ValueError:
        pass
    try:
        moment = datetime.fromisoformat(raw.replace("Z", "+00:00"))
    except ValueError:
        raise InvalidInput(
            f"since {raw[:40]!r} is not a time", hint="give Unix seconds or ISO 8601 such as 2026-11-30T12:00:00Z"
        ) from None
    return (moment if moment.tzinfo else moment.replace(tzinfo=UTC)).timestamp()


class FailureLog:
    """A bounded, persistent log of failed requests. ``path`` None keeps it in memory only."""

    def __init__(
        self,
        path: Path | None,
        max_entries: int = DEFAULT_MAX_ENTRIES,
        *,
        flush_seconds: float = 0.1,
        flush_entries: int = 256,
        max_buffered: int = 10_000,
    ) -> None:
        if max_entries < 1:
            raise ValueError(f"max_entries must be at least 1, not {max_entries}")
        self.path = path
        self.max_entries = max_entries
        self.flush_seconds = flush_seconds
        self.flush_entries = flush_entries
        self.max_buffered = max_buffered
        self.dropped = 0  # failures not logged because the writer fell max_buffered behind
        self._buffer: deque[_Row] = deque()
        self._lock = threading.Lock()  # one connection, used by the writer thread and readers in turn
        self._wake = threading.Event()  # the buffer got its first entry
        self._full = threading.Event()  # the buffer holds flush_entries
        self._closing = False
        self._db: sqlite3.Connection | None = None
        self._thread: threading.Thread | None = None

    def open(self) -> None:
        """Open (or create) the database and start the writer. Raises OSError or sqlite3.Error."""
        if self.path is not None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
        db = sqlite3.connect(self.path or ":memory:", check_same_thread=False, timeout=5.0)
        try:
            db.execute("PRAGMA journal_mode=WAL")
            db.execute("PRAGMA synchronous=NORMAL")  # WAL: durable across process crashes, not power loss
            db.executescript(_SCHEMA)
        except sqlite3.Error:
            db.close()
            raise
        self._db = db
        self._thread = threading.Thread(target=self._write_loop, name="leanserve-failure-log", daemon=True)
        self._thread.start()

    def record(self, ctx: RequestContext, model: str, version: str, error: LeanserveError) -> None:
        """Log one failed request (a :data:`leanserve.router.FailureHook`): an append, on the event loop."""
        buffer = self._buffer
        if len(buffer) >= self.max_buffered:
            self.dropped += 1
            return
        buffer.append(
            (
                time.time(),
                model[:_MAX_MODEL],
                version[:_MAX_VERSION],
                error.status,
                str(error)[:_MAX_MESSAGE],
                ctx.request_id[:_MAX_ID],
                (ctx.client or "")[:_MAX_CLIENT],
                f"{ctx.experiment}/{ctx.arm}"[:_MAX_MODEL] if ctx.experiment else "",
            )
        )
        pending = len(buffer)
        if pending == 1:
            self._wake.set()
        elif pending >= self.flush_entries:
            self._full.set()

    def query(self, query: FailureQuery | None = None) -> list[Failure]:
        """The failures that match, newest first. Blocks on the disk: call it off the event loop."""
        q = query or FailureQuery()
        where: list[str] = []
        args: list[object] = []
        if q.model is not None:
            where.append("model = ?")
            args.append(q.model)
        if q.status is not None:
            where.append("status = ?")
            args.append(q.status)
        if q.status_class is not None:
            where.append("status BETWEEN ? AND ?")
            args += [q.status_class * 100, q.status_class * 100 + 99]
        if q.since is not None:
            where.append("time >= ?")
            args.append(q.since)
        sql = f"SELECT {_COLUMNS} FROM failures"
        if where:
            sql += " WHERE " + " AND ".join(where)
        sql += " ORDER BY id DESC LIMIT ?"
        args.append(q.limit)
        with self._lock:
            db = self._connected()
            self._write_pending(db)
            rows = db.execute(sql, args).fetchall()
        return [Failure(*row) for row in rows]

    def count(self) -> int:
        with self._lock:
            db = self._connected()
            self._write_pending(db)
            n: int = db.execute("SELECT count(*) FROM failures").fetchone()[0]
        return n

    def flush(self) -> None:
        """Write what the buffer holds now."""
        with self._lock:
            self._write_pending(self._connected())

    def close(self) -> None:
        """Write what is buffered, stop the writer and close the database."""
        self._closing = True
        self._wake.set()
        self._full.set()
        if self._thread is not None:
            self._thread.join(timeout=10)
            self._thread = None
        with self._lock:
            if self._db is not None:
                with contextlib.suppress(sqlite3.Error):
                    self._write_pending(self._db)
                self._db.close()
                self._db = None

    # ---- the writer thread ---------------------------------------------------------------------

    def _write_loop(self) -> None:
        while not self._closing:
            self._wake.wait()
            if not self._closing:
                # Whatever else fails in the next flush_seconds goes into the same transaction.
                self._full.wait(self.flush_seconds)
            # Cleared before the buffer is drained: an append after the drain sets them again.
            self._wake.clear()
            self._full.clear()
            with self._lock:
                if self._db is None:
                    return
                try:
                    self._write_pending(self._db)
                except sqlite3.Error:
                    log.exception("could not write the failure log %s", self.path or "(in memory)")

    def _connected(self) -> sqlite3.Connection:
        if self._db is None:
            raise RuntimeError("the failure log is not open: call open() first")
        return self._db

    def _write_pending(self, db: sqlite3.Connection) -> None:
        """Called with the lock held."""
        buffer = self._buffer
        rows = [buffer.popleft() for _ in range(len(buffer))]
        if not rows:
            return
        with db:  # one transaction for the batch and the trim
            db.executemany(f"INSERT INTO failures ({_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?)", rows)
            db.execute("DELETE FROM failures WHERE id <= (SELECT max(id) FROM failures) - ?", (self.max_entries,))
        _log_rows(rows)


# Lines logged per (model, version, status) in one write batch; the rest are summed in one line.
# Under overload a model can shed thousands of requests a second, and a line each would flood the
# logs (every failure is still in the failure log itself).
LINES_PER_KIND = 5


def _log_rows(rows: list[_Row]) -> None:
    # Logged here, on the writer thread, so that a flood of failures never writes to stderr from
    # the event loop. Server errors are warnings; a client's mistakes are only for debugging.
    seen: dict[tuple[str, str, int], int] = {}
    for when, model, version, status, message, request_id, client, _ in rows:
        level = logging.WARNING if status >= 500 else logging.DEBUG
        kind = (model, version, status)
        seen[kind] = count = seen.get(kind, 0) + 1
        if count <= LINES_PER_KIND and log.isEnabledFor(level):
            log.log(
                level,
                "%d %s%s: %s (request %s from %s)",
                status,
                model,
                f"/{version}" if version else "",
                message,
                request_id,
                client or "?",
                extra={
                    "request_id": request_id,
                    "model": model,
                    "version": version,
                    "status": status,
                    "client": client,
                    "failed_at": when,
                },
            )
    for (model, version, status), count in seen.items():
        level = logging.WARNING if status >= 500 else logging.DEBUG
        if count > LINES_PER_KIND and log.isEnabledFor(level):
            log.log(
                level,
                "%d %s%s: %d more like these (see the failure log)",
                status,
                model,
                f"/{version}" if version else "",
                count - LINES_PER_KIND,
                extra={"model": model, "version": version, "status": status},
            )


__all__ = ["DEFAULT_MAX_ENTRIES", "FILE_NAME", "Failure", "FailureLog", "FailureQuery"]
