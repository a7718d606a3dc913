"""Slow and idle clients: how long a connection may take to send its request, or sit idle.

A client that opens connections and trickles its headers or body in (slowloris) or never sends
anything would otherwise hold the server's connections and memory for ever. The policy is
:func:`overdue`, pure; :class:`TimeoutSweeper` is the mechanism: once a second it looks at every
open connection of the fast front end and cuts off those that are overdue (408 to a request in
progress, a plain close for an idle kept-alive connection).

Sampling, not timers: the request path sets a flag and adds to a byte counter, and reads no clock;
the sweeper notes when it last saw each connection make progress. Timeouts are therefore accurate
to the sweep period (one second), which is what they need.
"""

from __future__ import annotations

import asyncio
import enum
from collections.abc import Collection
from dataclasses import dataclass
from typing import Protocol

from ..protocol import Limits

SWEEP_SECONDS = 1.0


class Phase(enum.Enum):
    IDLE = "idle"  # kept alive, no request in progress
    HEAD = "head"  # a request's head is arriving
    BODY = "body"  # its body is arriving
    BUSY = "busy"  # the server is answering: the server's time, never the client's fault


@dataclass(frozen=True, slots=True)
class Progress:
    """What the sweeper saw of a connection: its phase and how far it had got."""

    phase: Phase
    messages: int  # requests begun on the connection so far
    received: int  # bytes received so far


def overdue(phase: Phase, since: float, now: float, limits: Limits) -> bool:
    """Whether a connection that has been in ``phase`` without progress since ``since`` is cut off.

    A head must arrive whole within ``header_timeout_s`` of its first byte (progress within a head
    does not reset its clock: a head trickled byte by byte is the attack); a body may pause at most
    ``body_timeout_s`` between pieces; a kept-alive connection may idle ``idle_timeout_s``.
    """
    if phase is Phase.BUSY:
        return False
    limit = {
        Phase.HEAD: limits.header_timeout_s,
        Phase.BODY: limits.body_timeout_s,
        Phase.IDLE: limits.idle_timeout_s,
    }[phase]
    return now - since >= limit


def made_progress(before: Progress, after: Progress) -> bool:
    """Whether the clock of ``after``'s phase starts afresh."""
    if before.phase is not after.phase or before.messages != after.messages:
        return True
    # Within a body every new byte counts; within a head none does (see overdue).
    return after.phase is Phase.BODY and after.received != before.received


class Watched(Protocol):
    def progress(self) -> Progress: ...

    def time_out(self, phase: Phase) -> None: ...


class TimeoutSweeper:
    """Once a second, cuts off the connections in ``connections`` that :func:`overdue` says are."""

    def __init__(self, connections: Collection[Watched], limits: Limits) -> None:
        self._connections = connections
        self._limits = limits
        self._seen: dict[Watched, tuple[Progress, float]] = {}
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run())

    def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            self._task = None
        self._seen.clear()

    def sweep(self, now: float) -> list[Watched]:
        """One pass; the connections cut off."""
        cut: list[Watched] = []
        seen: dict[Watched, tuple[Progress, float]] = {}
        for connection in list(self._connections):
            progress = connection.progress()
            previous = self._seen.get(connection)
            since = now if previous is None or made_progress(previous[0], progress) else previous[1]
            if overdue(progress.phase, since, now, self._limits):
                connection.time_out(progress.phase)
                cut.append(connection)
            else:
                seen[connection] = (progress, since)
        self._seen = seen  # connections that closed are forgotten here
        return cut

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            await asyncio.sleep(SWEEP_SECONDS)
            self.sweep(loop.time())


__all__ = ["Phase", "Progress", "TimeoutSweeper", "made_progress", "overdue"]
