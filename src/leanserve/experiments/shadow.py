"""Shadow copies at the lowest priority: run only in event-loop turns that found nothing else to do.

A shadow copy is a second request's work on the control's CPU. Sent as soon as the control has
answered, it runs ahead of the control requests that arrive meanwhile, and at half a small
machine's capacity that doubled the control's p99 (benchmarks/RESULTS.md). Here a copy waits in a
queue instead, and a probe looks for a moment when the server is idle:

- The probe is a callback scheduled with ``call_soon``; the loop runs it in its next turn, after it
  has polled the sockets and run whatever they brought (requests parsed, batches run inline,
  answers written). The time between scheduling and running is how long that turn took: about a
  microsecond when the turn found nothing (uvloop; two on asyncio), 30 us or more when it served a
  request. Only a turn shorter than :data:`IDLE_TURN_S` may run copies, at most :data:`BURST` of them
  per idle turn, so a copy never runs ahead of control work that was ready, and a control request
  that arrives meanwhile waits for that burst at most. A burst rather than one copy: idle turns are
  rare on a busy server, and the copies of one turn reach the candidate's batcher together, where
  they can share an engine run (one copy per idle turn sent 3% of a 100% mirror at half capacity,
  benchmarks/RESULTS.md). After a busy turn the probe waits :data:`BUSY_RETRY_S` before it looks
  again: probing every turn would keep the loop from ever sleeping in its poll, a spinning core
  that the rest of the machine (the clients included) pays for.
- A copy also waits while its job says it is not ready (its control has requests in flight: an
  engine running off the loop is busy with control work), and a younger copy whose control is idle
  goes first; when no copy is ready the probe looks again after :data:`BUSY_RETRY_S` rather than
  spinning.
- A copy that found no idle moment within :data:`MAX_WAIT_S` is shed (counted by its job), and the
  queue's length is bounded by whoever submits (the experiment's ``shadow_max_in_flight``).

When the server is idle every copy runs at once; when it is busy every copy is shed; in between
copies take only the loop's idle time. The queue lives on the event loop; it is not thread-safe.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from collections.abc import Callable
from typing import Final, Protocol

IDLE_TURN_S: Final = 10e-6  # a loop turn this short found no other work
BURST: Final = 8  # copies run in one idle turn, at most
# After a busy turn, or with no job ready: look again after this long (uvloop's timers count whole ms).
BUSY_RETRY_S: Final = 0.002
MAX_WAIT_S: Final = 1.0  # a copy that found no idle moment in this long is shed

log = logging.getLogger("leanserve.experiments")


class Job(Protocol):
    """A shadow copy waiting to be sent."""

    queued_at: float  # the queue's clock when it was submitted

    def ready(self) -> bool:
        """Whether it may run now (besides the loop being idle)."""

    def run(self) -> None:
        """Send it (on the event loop, in an idle turn)."""

    def shed(self) -> None:
        """Drop it: it waited too long."""


class ShadowQueue:
    """Jobs run up to ``burst`` per idle event-loop turn, the oldest ready first; shed after ``max_wait_s``."""

    def __init__(
        self,
        max_wait_s: float = MAX_WAIT_S,
        idle_turn_s: float = IDLE_TURN_S,
        clock: Callable[[], float] = time.perf_counter,
        burst: int = BURST,
    ) -> None:
        self.max_wait_s = max_wait_s
        self.idle_turn_s = idle_turn_s
        self.burst = burst
        self.clock = clock
        self._jobs: deque[Job] = deque()
        self._armed_at: float | None = None  # when the probe was scheduled (None: it is not)
        self._skip = False  # a copy ran: the next turn runs its batch, and says nothing of the server
        self._timer: asyncio.TimerHandle | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    def __len__(self) -> int:
        return len(self._jobs)

    def submit(self, job: Job) -> None:
        """Queue ``job`` (from the event loop); it runs in the first idle turn, or is shed."""
        self._jobs.append(job)
        loop = asyncio.get_running_loop()
        if loop is not self._loop:  # first use, or a new loop: nothing is scheduled on this one
            self._loop, self._armed_at, self._timer = loop, None, None
        if self._armed_at is None and self._timer is None:
            self._arm()

    def _arm(self) -> None:
        self._timer = None
        self._armed_at = self.clock()
        self._loop.call_soon(self._probe)  # type: ignore[union-attr]

    def _wake(self) -> None:
        # The turn that runs a timer also runs the I/O that woke the loop (a request, mostly): judge
        # the turn after it, or a busy server would never show an idle one.
        self._skip = True
        self._arm()

    def _probe(self) -> None:
        now = self.clock()
        turn = now - self._armed_at  # type: ignore[operator]
        self._armed_at = None
        jobs = self._jobs
        while jobs and now - jobs[0].queued_at > self.max_wait_s:
            self._call(jobs.popleft().shed)
        if not jobs:
            return
        if self._skip:  # the turn held the last copy's own work: judge the next one
            self._skip = False
            self._arm()
            return
        if turn > self.idle_turn_s:
            # This turn served something: look again a little later, not in the next turn, so that a
            # busy server's loop still sleeps in its poll between requests (a probe in every turn
            # kept it spinning, and the CPU it took from the machine showed in the control's tail).
            self._timer = self._loop.call_later(BUSY_RETRY_S, self._wake)  # type: ignore[union-attr]
            return
        ran = 0
        while ran < self.burst:
            job = next((j for j in jobs if j.ready()), None)  # the oldest whose control is not busy
            if job is None:
                break
            if job is jobs[0]:
                jobs.popleft()
            else:
                jobs.remove(job)
            self._call(job.run)
            ran += 1
        if not ran:
            self._timer = self._loop.call_later(BUSY_RETRY_S, self._wake)  # type: ignore[union-attr]
            return
        if jobs:
            self._skip = True
            self._arm()

    @staticmethod
    def _call(action: Callable[[], None]) -> None:
        try:
            action()
        except Exception:  # a bug in one copy must not stop the queue (or reach the loop)
            log.exception("shadow copy failed")

    def drop(self) -> None:
        """Shed every queued job (at shutdown)."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        while self._jobs:
            self._call(self._jobs.popleft().shed)


__all__ = ["BURST", "BUSY_RETRY_S", "IDLE_TURN_S", "MAX_WAIT_S", "Job", "ShadowQueue"]
