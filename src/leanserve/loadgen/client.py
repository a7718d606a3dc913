"""The load generator's HTTP/1.1 client: uvloop, httptools, requests encoded once, keep-alive.

Built for the least work per request, so that the client is not what it measures: no coroutine
per request and no per-request objects beyond the latency float. Each connection is an
``asyncio.Protocol`` whose httptools parser is made once and fed whatever arrives; only
``on_message_complete`` is a Python callback (httptools skips the callbacks a protocol lacks).
When an answer completes, the connection records it and, in closed loop, writes its next
request's bytes (made before the load began) from that same callback.

Open loop: a timer coroutine (and every completion, for sub-millisecond precision) sends each
request when it is due on an idle connection, opening more up to ``max_connections`` and queueing
client-side beyond that. Each request's clock starts at its *scheduled* time, so when the server
stalls, the requests scheduled during the stall are charged for it (no coordinated omission).

Latencies of successful answers go into flat ``array('d')`` buffers, one per model, swapped at
each window's end; errors are counted by HTTP status or by kind (``connect``, ``reset``,
``timeout``, ``protocol``, ``unanswered``).
"""

from __future__ import annotations

import asyncio
import contextlib
from array import array
from collections import deque
from collections.abc import Callable, Coroutine, Sequence
from dataclasses import dataclass
from typing import Any

import httptools
import numpy as np

from ..timing import now
from .schedule import DRAWN, Level, gaps

_RETRY_S = 0.05  # between attempts to (re)connect after a refusal


@dataclass(slots=True)
class Recorded:
    """What one window collected: per model, successful latencies (seconds) and errors by status/kind."""

    latencies: list[array[float]]
    errors: list[dict[str, int]]
    scheduled: int = 0  # open loop: requests that fell due in the window

    @classmethod
    def empty(cls, models: int) -> Recorded:
        return cls([array("d") for _ in range(models)], [{} for _ in range(models)])

    def add(self, other: Recorded) -> Recorded:
        """This window with ``other``'s latencies and errors added."""
        for mine, theirs in zip(self.latencies, other.latencies, strict=True):
            mine.extend(theirs)
        for mine_e, theirs_e in zip(self.errors, other.errors, strict=True):
            for key, n in theirs_e.items():
                mine_e[key] = mine_e.get(key, 0) + n
        self.scheduled += other.scheduled
        return self

    @property
    def answered(self) -> int:
        return sum(len(a) for a in self.latencies) + sum(sum(e.values()) for e in self.errors)


class _Connection(asyncio.Protocol):
    __slots__ = ("busy", "driver", "kind", "parser", "start", "transport")

    def __init__(self, driver: Driver) -> None:
        self.driver = driver
        self.parser = httptools.HttpResponseParser(self)
        self.transport: asyncio.Transport | None = None
        self.start = 0.0  # when the request in flight was sent (closed loop) or scheduled (open loop)
        self.kind = 0  # which request (index into the driver's encoded requests)
        self.busy = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]  # uvloop's transports do not subclass it
        self.driver.connected(self)

    def data_received(self, data: bytes) -> None:
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError:
            self.driver.failed(self, "protocol")

    def on_message_complete(self, _now: Callable[[], float] = now) -> None:
        t = _now()
        d = self.driver
        parser = self.parser
        # Closed loop's common case inline (a success on a kept-alive connection): record, send the
        # next request, without two more Python calls (measured: about 4% of the client's CPU per
        # request; the rest is the kernel's and uvloop's, as for wrk).
        if d.closed_running and 200 <= parser.get_status_code() < 300 and parser.should_keep_alive():
            d.by_kind[self.kind].append(t - self.start)
            kind = d.sequence[d.cursor]
            d.cursor = (d.cursor + 1) & d.mask
            self.kind = kind
            self.start = t
            self.transport.write(d.requests[kind])  # type: ignore[union-attr]
            return
        d.answered(self, parser.get_status_code(), t)

    def connection_lost(self, exc: Exception | None) -> None:
        self.driver.lost(self)


class Driver:
    """Drives one load level over a pool of connections to one server."""

    def __init__(
        self,
        host: str,
        port: int,
        requests: Sequence[bytes],
        model_of: Sequence[int],
        sequence: np.ndarray,
        models: int,
        level: Level,
        max_connections: int = 1024,
        timeout_s: float = 30.0,
        seed: int = 0,
    ) -> None:
        self.host, self.port = host, port
        self.requests = list(requests)
        self.model_of = list(model_of)
        self.sequence = [int(i) for i in sequence]
        self.mask = len(self.sequence) - 1
        assert len(self.sequence) & self.mask == 0, "the request sequence's length must be a power of two"
        self.cursor = 0
        self.models = models
        self.level = level
        self.open_loop = level.rate is not None
        self.max_connections = max(1, max_connections)
        self.timeout_s = timeout_s
        self.recorded = Recorded.empty(models)
        self.by_kind = [self.recorded.latencies[m] for m in self.model_of]  # request -> its model's buffer
        self.running = False
        self.closed_running = False  # running and closed loop: the connections' fast path
        self.connections: set[_Connection] = set()
        self.opening = 0
        self.idle: list[_Connection] = []
        self.backlog: deque[float] = deque()  # scheduled times of due requests waiting for a connection
        self.gaps = [float(g) for g in gaps(level.rate, level.arrivals, DRAWN, seed)] if level.rate else [0.0]
        self.gap_index = 0
        self.next_at = 0.0
        self.tasks: set[asyncio.Task[None]] = set()
        self.loop: asyncio.AbstractEventLoop | None = None

    # ---- lifecycle -----------------------------------------------------------------------------

    async def start(self) -> None:
        self.loop = asyncio.get_running_loop()
        self.running = True
        self.closed_running = not self.open_loop
        first = self.level.concurrency if self.level.concurrency is not None else min(16, self.max_connections)
        for _ in range(first):
            self._open()
        self._spawn(self._watchdog())
        if self.open_loop:
            self.next_at = now()
            self._spawn(self._timer())

    def swap(self) -> Recorded:
        """End a window: what it recorded; the next window starts empty."""
        done, self.recorded = self.recorded, Recorded.empty(self.models)
        self.by_kind = [self.recorded.latencies[m] for m in self.model_of]
        return done

    async def stop(self, drain_s: float = 0.0) -> Recorded:
        """Stop sending. Closed loop: requests in flight are dropped (wrk's and hey's rule: the load
        ended, they did not fail). Open loop: they were scheduled inside the measurement, so their
        answers are awaited for up to ``drain_s`` and recorded (returned, apart from the window's);
        those still missing, and those never sent, count as ``unanswered``."""
        self.running = self.closed_running = False
        for task in self.tasks:
            task.cancel()
        for task in list(self.tasks):
            with contextlib.suppress(asyncio.CancelledError):
                await task
        drained = self.swap()
        if self.open_loop:
            end = now() + drain_s
            while any(c.busy for c in self.connections) and now() < end:
                await asyncio.sleep(0.005)
            for conn in self.connections:
                if conn.busy:
                    self._count(self.recorded.errors, self.model_of[conn.kind], "unanswered")
            for _ in self.backlog:
                self._count(self.recorded.errors, self.model_of[self.sequence[self.cursor]], "unanswered")
            drained = drained.add(self.swap())
        self.backlog.clear()
        for conn in list(self.connections):
            conn.busy = False
            if conn.transport is not None:
                conn.transport.abort()
        await asyncio.sleep(0)  # let connection_lost run
        return drained

    # ---- connections ---------------------------------------------------------------------------

    def _spawn(self, coroutine: Coroutine[Any, Any, None]) -> None:
        assert self.loop is not None
        task = self.loop.create_task(coroutine)
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

    def _open(self) -> None:
        self.opening += 1
        self._spawn(self._connect())

    async def _connect(self) -> None:
        assert self.loop is not None
        while self.running:
            try:
                await self.loop.create_connection(lambda: _Connection(self), self.host, self.port)
                self.opening -= 1
                return
            except OSError:
                self._count(self.recorded.errors, self.model_of[self.sequence[self.cursor]], "connect")
                await asyncio.sleep(_RETRY_S)
        self.opening -= 1

    def connected(self, conn: _Connection) -> None:
        self.connections.add(conn)
        if not self.running:
            return
        if not self.open_loop:
            self._send(conn, now())
        elif self.backlog:
            self._send(conn, self.backlog.popleft())
        else:
            self.idle.append(conn)

    def lost(self, conn: _Connection) -> None:
        self.connections.discard(conn)
        if conn in self.idle:
            self.idle.remove(conn)
        if conn.busy:
            conn.busy = False
            self._count(self.recorded.errors, self.model_of[conn.kind], "reset")
        conn.transport = None
        if self.running and (not self.open_loop or self.backlog):
            self._open()

    def failed(self, conn: _Connection, kind: str) -> None:
        if conn.busy:
            conn.busy = False
            self._count(self.recorded.errors, self.model_of[conn.kind], kind)
        if conn.transport is not None:
            conn.transport.abort()

    # ---- the request path ----------------------------------------------------------------------

    def _send(self, conn: _Connection, start: float) -> None:
        kind = self.sequence[self.cursor]
        self.cursor = (self.cursor + 1) & self.mask
        conn.kind = kind
        conn.start = start
        conn.busy = True
        conn.transport.write(self.requests[kind])  # type: ignore[union-attr]

    def answered(self, conn: _Connection, status: int, t: float) -> None:
        conn.busy = False
        if 200 <= status < 300:
            self.recorded.latencies[self.model_of[conn.kind]].append(t - conn.start)
        else:
            self._count(self.recorded.errors, self.model_of[conn.kind], str(status))
        if not conn.parser.should_keep_alive():
            if conn.transport is not None:
                conn.transport.close()  # lost() opens another
            return
        if not self.running:
            return
        if not self.open_loop:
            self._send(conn, t)
            return
        if self.backlog:
            self._send(conn, self.backlog.popleft())
        else:
            self.idle.append(conn)
        if self.next_at <= t:
            self._dispatch(t)

    @staticmethod
    def _count(errors: list[dict[str, int]], model: int, key: str) -> None:
        errors[model][key] = errors[model].get(key, 0) + 1

    # ---- open loop -----------------------------------------------------------------------------

    def _dispatch(self, t: float) -> None:
        """Send every request scheduled up to ``t``."""
        gaps_, mask = self.gaps, len(self.gaps) - 1
        while self.next_at <= t:
            self.recorded.scheduled += 1
            scheduled = self.next_at
            self.next_at += gaps_[self.gap_index]
            self.gap_index = (self.gap_index + 1) & mask
            if self.idle:
                self._send(self.idle.pop(), scheduled)
                continue
            self.backlog.append(scheduled)
            if len(self.connections) + self.opening < self.max_connections:
                self._open()

    async def _timer(self) -> None:
        while self.running:
            self._dispatch(now())
            await asyncio.sleep(max(0.0, self.next_at - now()))

    async def _watchdog(self) -> None:
        """Requests older than the timeout count as ``timeout``; their connection is replaced."""
        while self.running:
            await asyncio.sleep(min(0.1, self.timeout_s / 4))
            t = now()
            for conn in list(self.connections):
                if conn.busy and t - conn.start > self.timeout_s:
                    self.failed(conn, "timeout")
