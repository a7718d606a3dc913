"""Polling for a moment after an answer, before the event loop sleeps: the next request is often that close.

A loop with nothing to do sleeps in ``epoll_wait``, and waking it costs a scheduler wake-up and, on a
virtual machine, an idle vCPU that the hypervisor must wake (Linux's haltpoll cpuidle governor
polls for the same reason). A client that sends its next request as soon as it has an answer (a
closed loop, a proxy on the same host) pays that wake-up on every request. Under wrk at concurrency
1 on the 2-vCPU reference machine, leanserve's p50 went from 0.15-0.17 ms to 0.13-0.14 ms with
50 us of polling after each answer, at no more CPU a request: the polling took the place of the
wake-up (benchmarks/RESULTS.md). ONNX Runtime spins its idle workers for the same reason
(runtimes/threads.py), and this is as bounded: at most :data:`IDLE_POLL_SECONDS` after the
last answer, then the loop sleeps as before.

Not where the loop shares its cores with siblings (``serve --workers``), nor on one core, where
polling would take the time of the client or the engine: :func:`idle_poll_seconds` decides.
"""

from __future__ import annotations

import asyncio
import time
from typing import Final

IDLE_POLL_SECONDS: Final = 50e-6


def idle_poll_seconds(requested: float | None, cpus: int, shares_cores: bool) -> float:
    """How long the loop polls after an answer: ``requested`` when given (0: never), else the default
    where the process has ``cpus`` >= 2 cores and does not share them with sibling workers."""
    if requested is not None:
        if requested < 0:
            raise ValueError(f"idle polling must be 0 seconds (off) or more, got {requested}")
        return requested
    return IDLE_POLL_SECONDS if cpus >= 2 and not shares_cores else 0.0


class IdlePoll:
    """Keeps ``loop`` polling its sockets until ``seconds`` after the last :meth:`kick`.

    A callback that schedules itself again makes the loop poll with a zero timeout instead of
    sleeping; it stops at the deadline. A kick reads no clock (answers at concurrency 32 come 32 to
    a loop turn): the callback, which runs after the turn's answers, moves the deadline on.
    """

    __slots__ = ("_kicked", "_loop", "_seconds", "_until", "active")

    def __init__(self, loop: asyncio.AbstractEventLoop, seconds: float) -> None:
        self._loop = loop
        self._seconds = seconds
        self._until = 0.0
        self._kicked = False
        self.active = False  # a poll is scheduled

    def kick(self) -> None:
        """An answer went out: poll until ``seconds`` from now."""
        self._kicked = True
        if not self.active:
            self.active = True
            self._loop.call_soon(self._poll)

    def _poll(self) -> None:
        now = time.perf_counter()
        if self._kicked:
            self._kicked = False
            self._until = now + self._seconds
        if now < self._until:
            self._loop.call_soon(self._poll)
        else:
            self.active = False


__all__ = ["IDLE_POLL_SECONDS", "IdlePoll", "idle_poll_seconds"]
