"""Polling for a moment after an answer, before the event loop sleeps: the next request is often that close.

A loop with nothing to do sleeps in ``epoll_wait``, and waking it costs a scheduler wake-up and, on a
virtual machine, an idle vCPU that the hypervisor must wake (Linux's haltpoll cpuidle governor
polls for the same reason). A client that sends its next request as soon as it has an answer (a
closed loop, a proxy on the same host) pays that wake-up on every request. Under wrk at concurrency
1 on the 2-vCPU reference machine, leanserve's p50 went from 0.15-0.17 ms to 0.12-0.13 ms with
50 us of polling after each answer, at no more CPU a request: the polling took the place of the
wake-up (benchmarks/RESULTS.md).

Polling that catches nothing only costs: the CPU, and on a machine whose cores are hyperthreads,
the speed of whatever runs beside it. Open-loop load at 2,000 req/s (Poisson arrivals, the next
request within 50 us of an answer about one time in ten) answered at p50 0.78 ms against 0.70
with polling after every answer. So, as haltpoll adapts its window, polling stops once
:data:`MISSES_TO_STOP` polls have run out since the last one that caught a request, and one answer
in :data:`PROBE_EVERY` polls again to see whether the traffic changed.

Not where the loop shares its cores with siblings (``serve --workers``), nor on one core, where
polling would take the time of the client or the engine: :func:`idle_poll_seconds_for` decides.
"""

from __future__ import annotations

import asyncio
import time
from typing import Final

IDLE_POLL_SECONDS: Final = 50e-6
# Polls in a row that caught no request before polling stops; while stopped, one answer in
# PROBE_EVERY polls anyway, and a poll that catches one starts it again.
MISSES_TO_STOP: Final = 4
PROBE_EVERY: Final = 32


def idle_poll_seconds_for(requested: float | None, cpus: int, shares_cores: bool) -> float:
    """How long the loop polls after an answer: ``requested`` when given (0: never), else the default
    where the process has ``cpus`` >= 2 cores and does not share them with sibling workers."""
    if requested is not None:
        if requested < 0:
            raise ValueError(f"idle polling must be 0 seconds (off) or more, got {requested}")
        return requested
    return IDLE_POLL_SECONDS if cpus >= 2 and not shares_cores else 0.0


class IdlePoll:
    """Keeps ``loop`` polling its sockets until ``seconds`` after the last :meth:`kick`, while that pays.

    A callback that schedules itself again makes the loop poll with a zero timeout instead of
    sleeping; it stops at the deadline. A kick while polling reads no clock (answers at concurrency
    32 come 32 to a loop turn): the callback, which runs every loop turn while polling, moves the deadline on. A
    poll during which a request arrived (the front end sets :attr:`caught`) paid off (a hit); one
    that ran out without did not (a miss).
    """

    __slots__ = ("_hit", "_kicked", "_loop", "_misses", "_seconds", "_skipped", "_until", "active", "caught")

    def __init__(self, loop: asyncio.AbstractEventLoop, seconds: float) -> None:
        self._loop = loop
        self._seconds = seconds
        self._until = 0.0
        self._kicked = False
        self._hit = False  # the poll in progress saw a request arrive
        self._misses = 0  # polls run out in a row without a request
        self._skipped = 0  # answers not followed by a poll since polling stopped
        self.active = False  # a poll is scheduled
        self.caught = False  # a request arrived: set by the front end, read by the poll

    @property
    def polling(self) -> bool:
        """Whether an answer now starts a poll (False: stopped after misses, until a probe catches one)."""
        return self._misses < MISSES_TO_STOP

    def kick(self) -> None:
        """An answer went out: poll until ``seconds`` from now (if polling has paid lately)."""
        self._kicked = True
        if self.active:
            return
        if self._misses >= MISSES_TO_STOP:
            self._skipped += 1
            if self._skipped < PROBE_EVERY:
                return
        self._skipped = 0
        self.active = True
        self._hit = self.caught = self._kicked = False
        self._until = time.perf_counter() + self._seconds
        self._loop.call_soon(self._poll)

    def _poll(self) -> None:
        now = time.perf_counter()
        if self.caught:
            self.caught = False
            self._hit = True
            self._misses = 0
        if self._kicked:  # an answer since the last turn: poll on from it
            self._kicked = False
            self._until = now + self._seconds
        if now < self._until:
            self._loop.call_soon(self._poll)
            return
        self.active = False
        if not self._hit:
            self._misses += 1


__all__ = ["IDLE_POLL_SECONDS", "MISSES_TO_STOP", "PROBE_EVERY", "IdlePoll", "idle_poll_seconds_for"]
