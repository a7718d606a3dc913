"""Admission: which requests a model's queue takes, refuses at once (503) or drops (504, gone).

Policy only: pure functions and one small state machine, unit-tested without sockets. The
batcher (:mod:`leanserve.batching`) owns the mechanism: it asks these at submit and at each
flush, answers the requests, and counts the drops by reason.

Three rules, each costing nothing to a request on an idle or lightly loaded model:
- **Deadlines.** A request may carry one (the protocol's ``timeout`` parameter in microseconds,
  as Triton reads it, or a gRPC deadline). When the queue ahead of it is already expected to take
  longer than that (its rows times the measured seconds per row), it is refused at once with 503
  and ``Retry-After``; one whose deadline passes while it waits is dropped before the engine (504).
- **Departed callers.** A request whose client hung up is dropped before the engine.
- **Controlled delay.** Callers that send no deadline still give up (a client timeout, a user who
  leaves). A FIFO queue that grows without bound then computes only answers nobody reads. After
  CoDel (Nichols and Jacobson, 2012) and its server variant (Facebook's, in wangle): when even the
  *shortest* wait over an interval stayed above a target, the queue is standing, not a burst, and
  requests that waited over twice the target are refused with 503 while it lasts.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Final

from .errors import ClientGone, DeadlineExceeded, InvalidInput, LeanserveError, Overloaded

# The protocol's ``timeout`` request parameter is in microseconds (Triton's reading).
TIMEOUT_PARAMETER: Final = "timeout"

# CoDel's interval: how long the shortest wait must stay above the target before shedding starts.
# At least 100 ms (CoDel's own), and a few targets, so one slow batch is never mistaken for a queue.
MIN_INTERVAL_SECONDS: Final = 0.1
INTERVALS_PER_TARGET: Final = 2
# The target is at least this many single-request engine runs: a request that waited for the run
# in progress and then its own waited for the engine, not for a queue. In runs of the model rather
# than in batches: under a long queue batches grow (and take longer), and a target that grew with
# them would let the queue grow further. While overloaded, batches are capped to the target too.
TARGET_RUNS: Final = 2.0
# After an overload ends, a standing queue within this many intervals is an overload again at once.
# CoDel's own figure for "dropping recently".
MEMORY_INTERVALS: Final = 16


def timeout_deadline(parameters: Mapping[str, object], now: float) -> float | None:
    """The deadline (``now``'s clock) a request's ``timeout`` parameter sets, None without one.

    Triton's ``timeout`` is in microseconds; 0 or absent means none. A malformed value is the
    caller's mistake, refused with 400 by :func:`parse_timeout_us`.
    """
    value = parameters.get(TIMEOUT_PARAMETER)
    if value is None:
        return None
    micros = parse_timeout_us(value)
    return None if micros == 0 else now + micros / 1e6


def parse_timeout_us(value: object) -> int:
    if type(value) is not int or value < 0:
        raise InvalidInput(
            f"parameters.timeout must be a non-negative integer (microseconds), got {value!r}",
            hint="send the request's deadline in microseconds, as Triton does; 0 for none",
        )
    return value


def retry_after_seconds(wait: float) -> int:
    """Whole seconds for ``Retry-After``: the expected wait rounded up, at least 1."""
    if not math.isfinite(wait):
        return 1
    return max(1, math.ceil(wait))


def admit(now: float, deadline: float | None, queued_rows: int, row_seconds: float | None) -> LeanserveError | None:
    """None to queue the request; else the 503 to answer at once, its deadline out of reach.

    ``row_seconds`` is the measured engine time per row (None until measured: admit).
    """
    if deadline is None:
        return None
    if deadline <= now:
        return DeadlineExceeded("the request's deadline had passed when it reached the model's queue")
    if row_seconds is None or queued_rows == 0:
        return None
    wait = queued_rows * row_seconds
    if now + wait <= deadline:
        return None
    return Overloaded(
        f"the model's queue ({queued_rows} rows, about {wait * 1000:.0f} ms) is longer than the request's deadline "
        f"({(deadline - now) * 1000:.0f} ms from now)",
        hint="retry later or with a longer timeout",
        retry_after=retry_after_seconds(wait),
    )


def departed() -> ClientGone:
    return ClientGone("the client hung up before its request reached the model: not computed")


def over_target(
    queued_rows: int, row_seconds: float | None, target: float, running_seconds: float = 0.0
) -> Overloaded | None:
    """While the queue is standing: refuse a new request whose expected wait is already over the target.

    The wait is the queued rows' engine time and what is left of the batch running
    (``running_seconds``): leaving the batch out admitted requests that waited a batch longer than
    the target (at twice MiniLM's capacity, batch in progress + queue + own batch: three targets).
    Refused before it is decoded or queued, so a flood of retries costs the server little.
    """
    if row_seconds is None:
        return None
    wait = queued_rows * row_seconds + running_seconds
    if wait <= target:
        return None
    return Overloaded(
        f"the model is overloaded: its queue ({queued_rows} rows, about {wait * 1000:.0f} ms) has stayed over "
        f"{target * 1000:.0f} ms for a while",
        hint="retry later, or spread the load over more replicas",
        retry_after=retry_after_seconds(wait),
    )


def overload_rows(limit: int, target: float, row_seconds: float | None) -> int:
    """The most rows a batch may take while overloaded: what the engine runs within ``target``."""
    if row_seconds is None or row_seconds <= 0:
        return limit
    return max(1, min(limit, int(target / row_seconds)))


def expired(deadline: float) -> DeadlineExceeded:
    return DeadlineExceeded(
        "the request's deadline passed while it waited in the model's queue",
        hint="send a longer timeout, or fewer requests at once",
    )


def shed(waited: float, target: float) -> Overloaded:
    return Overloaded(
        f"the model is overloaded: the request waited {waited * 1000:.0f} ms in its queue, which has stayed over "
        f"{target * 1000:.0f} ms for a while",
        hint="retry later, or spread the load over more replicas",
        retry_after=retry_after_seconds(2 * target),
    )


class ControlledDelay:
    """CoDel's control law for one model's queue, fed the wait of each batch's newest request.

    :meth:`observe` is called at each flush with the shortest wait of the requests it took and
    the time; it returns the wait beyond which queued requests should be shed now, or None when
    the queue is not standing. ``floor_seconds`` is the least target (``overload_wait_ms``);
    ``run_seconds`` passed to :meth:`observe` is the measured engine time of a one-request run.

    Entering the overloaded state takes the shortest wait staying above the target for a whole
    interval, counted from the first flush that found it above (CoDel's ``first_above_time``):
    in fixed windows, a window that opened with a short wait had to pass before the next could
    give a verdict, so a queue at twice the model's capacity stood for up to two intervals before
    anything was refused (0.9 s on MiniLM, waits of 430 ms admitted). It takes no interval when
    the requests still queued are already expected to take the engine longer than an interval: a
    burst is what drains within an interval, and that queue cannot (on MiniLM, two batches of 12
    and 15 rows ran 550 ms before the interval was up). Re-entering within
    ``MEMORY_INTERVALS`` of the last overload takes one flush above the target (CoDel resumes
    dropping at once too): the load that overloaded the model is most likely still there, and
    waiting another interval let the queue grow back each time (re-entries admitted waits of
    620 ms, in batches of 15 rows, on MiniLM at twice its capacity).

    Leaving the overloaded state takes a whole interval in which nothing had to be refused (or
    shed) and a short wait was seen: while shedding works, the requests it admits wait little, and
    judging by their waits alone let the queue grow back for an interval, then shed again (an
    oscillation measured on MiniLM under 200 impatient clients).
    """

    __slots__ = (
        "_above_since",
        "_floor",
        "_interval_end",
        "_left_at",
        "_min_wait",
        "_refused",
        "above",
        "overloaded",
        "target",
    )

    def __init__(self, floor_seconds: float) -> None:
        self._floor = floor_seconds
        self.target = floor_seconds
        self._above_since: float | None = None  # not overloaded: when the shortest wait went above the target
        self._interval_end = 0.0  # overloaded: when the current interval's verdict is due
        self._min_wait = math.inf  # overloaded: the shortest wait in the current interval
        self._refused = 0  # overloaded: requests refused or shed in the current interval
        self._left_at = -math.inf  # when the last overload ended
        self.overloaded = False
        # Not yet overloaded, but the last flush found even its shortest wait above the target:
        # the batcher caps batches at the target meanwhile, as while overloaded.
        self.above = False

    def refused(self) -> None:
        """One request refused or shed because of overload (keeps the overloaded state for another interval)."""
        self._refused += 1

    def observe(
        self,
        now: float,
        min_wait: float,
        run_seconds: float,
        backlog_seconds: float = 0.0,
        work_seconds: float | None = None,
    ) -> float | None:
        """The wait over which queued requests are shed now, or None: not overloaded.

        ``backlog_seconds`` is the engine time the requests left queued are expected to take;
        ``work_seconds`` that and the batch being taken (None: not measured yet). Work under the
        target means the waits did not come from the engine's queue but from the event loop
        itself being starved of CPU (a tiny model's queue, 32 rows of 5 us, cannot stand for
        100 ms): refusing requests would not shorten them, so that is no overload.
        """
        target = max(self._floor, TARGET_RUNS * run_seconds)
        self.target = target
        interval = max(MIN_INTERVAL_SECONDS, INTERVALS_PER_TARGET * target)
        if not self.overloaded:
            if min_wait <= target or (work_seconds is not None and work_seconds < target):
                self._above_since = None
                self.above = False
                return None
            if self._above_since is None:
                self._above_since = now
            if (
                now - self._above_since < interval
                and backlog_seconds <= interval
                and now - self._left_at > MEMORY_INTERVALS * interval
            ):
                self.above = True
                return None
            self.overloaded = True
            self.above = False
            self._above_since = None
            self._min_wait = min_wait
            self._refused = 0
            self._interval_end = now + interval
            return 2 * target
        if min_wait < self._min_wait:
            self._min_wait = min_wait
        if now >= self._interval_end:
            # One verdict per interval: overloaded while even its shortest wait stayed above target,
            # or while shedding had to refuse requests to keep it below.
            self.overloaded = self._min_wait > target or self._refused > 0
            if not self.overloaded:
                self._left_at = now
                return None
            self._min_wait = min_wait
            self._refused = 0
            self._interval_end = now + interval
        return 2 * target

    def idle(self) -> None:
        """The queue emptied: no wait stands above the target (an overload ends only by an interval's verdict)."""
        self._above_since = None
        self.above = False


__all__ = [
    "TIMEOUT_PARAMETER",
    "ControlledDelay",
    "admit",
    "departed",
    "expired",
    "over_target",
    "overload_rows",
    "parse_timeout_us",
    "retry_after_seconds",
    "shed",
    "timeout_deadline",
]
