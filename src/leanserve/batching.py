"""Dynamic batching: one queue and one inference thread per model version.

Mechanism and policy are apart. :func:`take_batch` and :func:`flush_delay` are pure and decide
*which* queued requests run together and *when*; :class:`Batcher` owns the queue, the worker
thread, timing and statistics.

Latency rules, in order of importance:
- A lone request on an idle model is never held back (unless ``max_queue_delay_ms`` asks for it).
  Flushes are scheduled with ``call_soon``, so requests parsed in the same event-loop turn
  still share a batch without waiting for anything.
- While the engine is busy, requests pile up; the next batch takes as many as fit.
- Requests whose non-batch dimensions or datatypes differ are never mixed.
- A batch measured to be cheap (a small model) runs inline on the event loop: a thread hand-off
  costs more than the inference itself (:func:`runs_inline` decides).
"""

from __future__ import annotations

import asyncio
import logging
import queue
import threading
import time
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Protocol

import numpy as np

from . import admission
from .batch_size import BatchSizeTuner
from .config import DynamicBatching
from .errors import DeadlineExceeded, InferenceFailed, LeanserveError, ModelNotReady, Overloaded
from .futures import call_as_future
from .runtimes import Runtime
from .stats import ModelStats

log = logging.getLogger("leanserve.batching")

Tensors = dict[str, np.ndarray]
# Called once, on the event-loop thread, with the request's own outputs or its error. Plain
# callbacks rather than futures: each future hop costs an event-loop turn per request.
Done = Callable[[Tensors | None, LeanserveError | None], None]

# A batch whose engine time is expected under this runs inline on the event loop: a thread
# hand-off (a wake-up, a GIL transfer, a self-pipe write back) costs more than the work.
INLINE_BELOW_SECONDS = 0.0003


class Caller(Protocol):
    """What the batcher reads of a request's caller (the router's RequestContext) at each flush."""

    deadline: float | None  # event-loop time by which the answer is useless
    gone: bool  # the client hung up: nobody will read the answer


@dataclass(slots=True)
class QueuedRequest:
    inputs: Mapping[str, np.ndarray]
    rows: int  # batch rows this request carries (1 for a model that does not batch)
    key: tuple[object, ...]  # requests with different keys never share a batch
    done: Done
    enqueued: float = field(default_factory=time.perf_counter)
    caller: Caller | None = None


def batch_key(inputs: Mapping[str, np.ndarray], batching: bool) -> tuple[object, ...]:
    """What must be equal for two requests to be concatenated: per-input dtype and non-batch shape."""
    if not batching:
        return ()
    if len(inputs) == 1:  # the common case, without sorting
        for name, a in inputs.items():
            return ((name, a.dtype, a.shape[1:]),)
    return tuple((name, a.dtype, a.shape[1:]) for name, a in sorted(inputs.items()))


def take_batch(pending: Sequence[QueuedRequest], max_rows: int) -> list[int]:
    """Indices of the requests to run next: the oldest, then every compatible one that fits, in order.

    ``max_rows`` 0 means the model does not batch: one request at a time.
    """
    if not pending:
        return []
    if max_rows <= 0:
        return [0]
    head = pending[0]
    chosen = [0]
    rows = head.rows
    for i in range(1, len(pending)):
        if rows >= max_rows:
            break
        r = pending[i]
        if r.key == head.key and rows + r.rows <= max_rows:
            chosen.append(i)
            rows += r.rows
    return chosen


def runs_inline(estimate: float | None, inline_below: float, run_timeout: float) -> bool:
    """Whether a batch expected to take ``estimate`` engine seconds runs on the event loop itself.

    Only a batch measured to be cheaper than the thread hand-off (``inline_below``: a wake-up of the
    engine thread, a GIL transfer, a self-pipe write back) runs inline; one not yet measured goes to
    the thread. Never with a run timeout (``runtime.timeout_ms``): ONNX Runtime's cancellation would
    still work on the loop, but the watchdog for a run that never returns could not, since the loop
    it runs on would be the one stuck.
    """
    return run_timeout <= 0 and estimate is not None and estimate < inline_below


def flush_delay(now: float, oldest_enqueued: float, queued_rows: int, max_rows: int, config: DynamicBatching) -> float:
    """Seconds to keep waiting for companions before flushing (0: flush now)."""
    if config.max_queue_delay_ms <= 0 or max_rows <= 0:
        return 0.0
    target = config.preferred_batch_sizes[-1] if config.preferred_batch_sizes else max_rows
    if queued_rows >= target:
        return 0.0
    return max(0.0, oldest_enqueued + config.max_queue_delay_ms / 1000.0 - now)


def split_rows(outputs: Mapping[str, np.ndarray], row_counts: Sequence[int]) -> list[Tensors]:
    """Cut batched outputs back into one dict per request, each with exactly its own rows."""
    total = sum(row_counts)
    for name, array in outputs.items():
        if array.ndim == 0 or array.shape[0] != total:
            raise InferenceFailed(
                f"output {name!r} has shape {list(array.shape)}, expected a first dimension of {total} "
                "(one row per batched input row)",
                hint="set max_batch_size = 0 in model.toml if the model does not batch along dimension 0",
            )
    if len(row_counts) == 1:  # a lone request: its outputs are all its own
        return [dict(outputs)]
    if total == len(row_counts) and 0 not in row_counts:
        # One row each (one item per request, the common case): each output's rows as views in one
        # pass of numpy's iterator, not a slice and a dict comprehension per request (0.44 -> 0.13 us).
        if len(outputs) == 1:
            for name, array in outputs.items():
                return [{name: row} for row in array[:, None]]
        names = list(outputs)
        columns = [array[:, None] for array in outputs.values()]  # every one has `total` rows: checked above
        return [dict(zip(names, rows, strict=True)) for rows in zip(*columns, strict=True)]
    parts: list[Tensors] = []
    start = 0
    for n in row_counts:
        parts.append({name: array[start : start + n] for name, array in outputs.items()})
        start += n
    return parts


@dataclass(slots=True)
class _Job:
    batch: list[QueuedRequest]
    inputs: Tensors
    abandoned: bool = False  # the watchdog answered its callers: the engine never came back


def watchdog_seconds(run_timeout: float) -> float:
    """How long after a run's timeout the engine is declared stuck: it had twice the time, and a second."""
    return 2 * run_timeout + 1.0


@dataclass(slots=True)
class _Done:
    batch: list[QueuedRequest]
    results: list[Tensors | LeanserveError]
    seconds: float


class Batcher:
    """Queues requests for one model version and runs them on the engine in batches."""

    def __init__(
        self,
        runtime: Runtime,
        max_batch_size: int,
        config: DynamicBatching,
        stats: ModelStats,
        output_names: Sequence[str] | None = None,
        inline_below_seconds: float = INLINE_BELOW_SECONDS,
        run_timeout: float = 0.0,
        on_stuck: Callable[[str], None] | None = None,
    ) -> None:
        self._runtime = runtime
        self._max_rows = max_batch_size
        self._tuner = BatchSizeTuner(max_batch_size) if config.adaptive_batch_size and max_batch_size > 1 else None
        self._config = config
        self._stats = stats
        self._output_names = list(output_names) if output_names else None
        self._inline_below = inline_below_seconds
        self._pending: deque[QueuedRequest] = deque()
        self._queued_rows = 0
        self._busy = False
        self._flush_handle: asyncio.Handle | None = None
        self._closed = False
        self._loop: asyncio.AbstractEventLoop | None = None
        # Estimated seconds for one single-request run; None until measured.
        self._single_cost: float | None = None
        # Moving average of seconds per row over batches of several rows; None until measured.
        self._row_cost: float | None = None
        self._jobs: queue.SimpleQueue[_Job | None] = queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        self._idle = asyncio.Event()
        self._idle_set = False  # mirrors self._idle: Event.is_set is a Python call per request
        # Overload (see admission.py): the controlled-delay state, and the requests dropped before the engine.
        self._codel = admission.ControlledDelay(config.overload_wait_ms / 1000.0)
        self._shedding = config.overload_wait_ms > 0
        # A run that never returns (runtime.timeout_ms): the watchdog fails its callers, and the
        # version is unavailable from then on, with the reason (told to the registry by on_stuck).
        self._run_timeout = run_timeout
        self._on_stuck = on_stuck
        self._watchdog: asyncio.TimerHandle | None = None
        self.broken: str | None = None
        # Mirrors the controlled delay's verdict in a plain attribute: the router reads it for
        # every request (before decoding), and a property would be a call each time.
        self.overloaded = False
        self._backlog = False  # requests were left queued at the last flush
        self._running_until = 0.0  # while overloaded: when the batch running is expected to end (perf_counter)
        self.dropped = stats.dropped  # by reason, kept with the version's other statistics

    @property
    def queued(self) -> int:
        return len(self._pending)

    @property
    def batching(self) -> bool:
        return self._max_rows > 0

    def refusal(self) -> LeanserveError | None:
        """While :attr:`overloaded`: the 503 for a new request that would wait over the target, else None."""
        running = self._running_until - time.perf_counter() if self._busy else 0.0
        refused = admission.over_target(self._queued_rows, self._row_seconds(), self._codel.target, max(0.0, running))
        if refused is not None:
            self.dropped["overload"] += 1
            self._codel.refused()
        return refused

    def submit(self, inputs: Mapping[str, np.ndarray], rows: int, done: Done, caller: Caller | None = None) -> None:
        """Queue one request; ``done`` later receives its own outputs (its rows only) or its error.

        ``caller`` lets the batcher drop the request before the engine when its client has gone
        or its deadline passed, and refuse it at once when the queue is longer than its deadline.
        """
        loop = self._loop or self._bind_loop()
        if self._closed:
            done(None, ModelNotReady(self.broken or f"model {self._stats.name!r} is unloading"))
            return
        if caller is not None and caller.deadline is not None:
            refused = admission.admit(loop.time(), caller.deadline, self._queued_rows, self._row_seconds())
            if refused is not None:
                self.dropped["deadline" if refused.status == 504 else "expected_wait"] += 1
                done(None, refused)
                return
        if len(self._pending) >= self._config.max_queue_size:
            done(
                None,
                Overloaded(
                    f"model {self._stats.name!r} has {len(self._pending)} requests queued, the most allowed",
                    hint="retry later, or raise dynamic_batching.max_queue_size",
                    retry_after=1,
                ),
            )
            return
        key = batch_key(inputs, self._max_rows > 0)
        self._pending.append(QueuedRequest(inputs, rows, key, done, time.perf_counter(), caller))
        self._queued_rows += rows
        if self._idle_set:
            self._idle.clear()
            self._idle_set = False
        if not self._busy and self._flush_handle is None:
            self._schedule_flush(loop)

    async def infer(self, inputs: Mapping[str, np.ndarray], rows: int, caller: Caller | None = None) -> Tensors:
        """:meth:`submit` for async callers: the request's outputs, or its error raised."""
        return await call_as_future(lambda done: self.submit(inputs, rows, done, caller))

    async def drain(self) -> None:
        """Wait until nothing is queued or running."""
        if self._pending or self._busy:
            await self._idle.wait()

    async def close(self) -> None:
        """Stop accepting, let queued requests finish, stop the worker thread."""
        self._closed = True
        await self.drain()
        if self._thread is not None and self.broken is None:  # a stuck thread never joins: it is a daemon
            self._jobs.put(None)
            await asyncio.get_running_loop().run_in_executor(None, self._thread.join)
        self._thread = None

    # ---- mechanism ----------------------------------------------------------------------------

    def _bind_loop(self) -> asyncio.AbstractEventLoop:
        self._loop = asyncio.get_running_loop()
        return self._loop

    def _schedule_flush(self, loop: asyncio.AbstractEventLoop) -> None:
        delay = flush_delay(
            time.perf_counter(), self._pending[0].enqueued, self._queued_rows, self._max_rows, self._config
        )
        if delay > 0:
            self._flush_handle = loop.call_later(delay, self._flush)
        else:
            self._flush_handle = loop.call_soon(self._flush)

    def _flush(self) -> None:
        self._flush_handle = None
        if self._busy or not self._pending:
            return
        if self._closed is False and self._config.max_queue_delay_ms > 0:
            delay = flush_delay(
                time.perf_counter(), self._pending[0].enqueued, self._queued_rows, self._max_rows, self._config
            )
            if delay > 0:
                assert self._loop is not None
                self._flush_handle = self._loop.call_later(delay, self._flush)
                return
        limit = self._tuner.limit() if self._tuner is not None else self._max_rows
        if self.overloaded or self._codel.above:
            # While a queue stands, a batch takes no longer than the target: the rows/s a larger
            # batch might add are worth nothing to callers who gave up waiting for it. So too while
            # the waits are above the target before the verdict: a batch that takes everything
            # queued leaves no backlog to judge, and at twice MiniLM's capacity such batches grew
            # to 15 rows (300 ms) and doubled every wait before the queue was judged standing.
            limit = admission.overload_rows(limit, self._codel.target, self._row_seconds())
        batch = self._pop(take_batch(self._pending, limit))
        now = time.perf_counter()
        self._backlog = bool(self._pending)
        waits = [now - r.enqueued for r in batch]
        min_wait = min(waits, default=float("inf"))
        dropped = False
        for r in batch:
            if r.caller is not None and (r.caller.gone or r.caller.deadline is not None):
                dropped = True
                break
        if (self._backlog or self._codel.overloaded or min_wait > self._codel.target) and self._shedding:
            # A queue stands behind this batch, or this batch waited over the target: let the
            # controlled delay judge it.
            row_seconds = self._row_seconds()
            backlog, work = 0.0, None
            if row_seconds is not None:  # the engine time queued behind this batch, and with it
                backlog = self._queued_rows * row_seconds
                work = backlog + sum(r.rows for r in batch) * row_seconds
            threshold = self._codel.observe(now, min_wait, self._single_cost or self._row_cost or 0.0, backlog, work)
            if threshold is not None and not self.overloaded:
                # Overloaded from this flush on: this batch too takes no longer than the target.
                batch = self._trim(batch, admission.overload_rows(limit, self._codel.target, row_seconds))
                del waits[len(batch) :]  # the rest wait on: counted when they are taken
            self.overloaded = threshold is not None
            if threshold is not None:
                batch = self._shed(batch, now, threshold)
        self._stats.record_queue_waits(waits)
        if dropped:
            batch = self._drop_departed(batch)
        if not batch:  # every caller of this batch was gone or shed: nothing to run
            self._after_batch()
            return
        self._busy = True
        try:
            inputs = self._concatenate(batch)
        except Exception as e:  # every error must reach the callers, or they wait for ever
            if not isinstance(e, LeanserveError):
                log.exception("model %s: could not assemble a batch", self._stats.name)
                e = InferenceFailed(f"could not assemble the batch: {type(e).__name__}: {e}")
            self._finish(_Done(batch, [e] * len(batch), 0.0))
            return
        estimate = self._estimate(sum(r.rows for r in batch))
        if self.overloaded and estimate is not None:
            self._running_until = now + estimate  # what over_target counts as still ahead of a new request
        if runs_inline(estimate, self._inline_below, self._run_timeout):
            self._finish(self._execute(_Job(batch, inputs)))
        else:
            self._ensure_thread()
            job = _Job(batch, inputs)
            if self._run_timeout > 0:
                assert self._loop is not None
                self._watchdog = self._loop.call_later(watchdog_seconds(self._run_timeout), self._stuck, job)
            self._jobs.put(job)

    def _row_seconds(self) -> float | None:
        """Measured engine seconds per row (None until measured)."""
        return self._row_cost if self._row_cost is not None else self._single_cost

    def _shed(self, batch: list[QueuedRequest], now: float, threshold: float) -> list[QueuedRequest]:
        """Refuse (503) the requests that waited over ``threshold``: in this batch, and at the queue's head."""
        target = self._codel.target
        kept = []
        for r in batch:
            if now - r.enqueued > threshold:
                self.dropped["overload"] += 1
                self._codel.refused()
                self._answer(r, None, admission.shed(now - r.enqueued, target))
            else:
                kept.append(r)
        pending = self._pending
        while pending and now - pending[0].enqueued > threshold:
            r = pending.popleft()
            self._queued_rows -= r.rows
            self.dropped["overload"] += 1
            self._codel.refused()
            self._answer(r, None, admission.shed(now - r.enqueued, target))
        return kept

    def _trim(self, batch: list[QueuedRequest], max_rows: int) -> list[QueuedRequest]:
        """The batch cut to ``max_rows``; the newest requests beyond go back to the queue's head, in order."""
        rows = 0
        for i, r in enumerate(batch):
            rows += r.rows
            if rows > max_rows and i > 0:
                for back in reversed(batch[i:]):
                    self._pending.appendleft(back)
                    self._queued_rows += back.rows
                self._backlog = True
                return batch[:i]
        return batch

    def _drop_departed(self, batch: list[QueuedRequest]) -> list[QueuedRequest]:
        """Answer, without running them, the requests whose client has gone or whose deadline passed."""
        assert self._loop is not None
        loop_now = self._loop.time()
        kept = []
        for r in batch:
            caller = r.caller
            if caller is not None and caller.gone:
                self.dropped["disconnected"] += 1
                self._answer(r, None, admission.departed())
            elif caller is not None and caller.deadline is not None and caller.deadline <= loop_now:
                self.dropped["deadline"] += 1
                self._answer(r, None, admission.expired(caller.deadline))
            else:
                kept.append(r)
        return kept

    def _answer(self, request: QueuedRequest, outputs: Tensors | None, error: LeanserveError | None) -> None:
        try:
            request.done(outputs, error)
        except Exception:  # one caller's broken callback must not starve the rest of the batch
            log.exception("error delivering a result for model %s", self._stats.name)

    def _estimate(self, rows: int) -> float | None:
        """Expected engine seconds for a batch of ``rows``, from what was measured so far."""
        if rows <= 1:
            return self._single_cost
        return None if self._row_cost is None else self._row_cost * rows

    def _pop(self, indices: list[int]) -> list[QueuedRequest]:
        if indices[-1] == len(indices) - 1:  # the common case (indices ascend): a prefix of the queue
            batch = [self._pending.popleft() for _ in indices]
        else:
            chosen = set(indices)
            batch = [r for i, r in enumerate(self._pending) if i in chosen]
            self._pending = deque(r for i, r in enumerate(self._pending) if i not in chosen)
        self._queued_rows -= sum(r.rows for r in batch)
        return batch

    def _concatenate(self, batch: list[QueuedRequest]) -> Tensors:
        if len(batch) == 1:
            return dict(batch[0].inputs)
        names = batch[0].inputs.keys()
        return {name: np.concatenate([r.inputs[name] for r in batch]) for name in names}

    def _ensure_thread(self) -> None:
        if self._thread is None:
            self._thread = threading.Thread(
                target=self._work, name=f"leanserve-{self._stats.name}-v{self._stats.version}", daemon=True
            )
            self._thread.start()

    def _work(self) -> None:
        loop = self._loop
        assert loop is not None
        while (job := self._jobs.get()) is not None:
            done = self._execute(job)
            if not job.abandoned:
                loop.call_soon_threadsafe(self._finish, done, True)

    def _execute(self, job: _Job) -> _Done:
        """Run one batch; on failure of a shared batch, rerun each request alone so only the culprit fails."""
        start = time.perf_counter()
        try:
            outputs = self._runtime.run(job.inputs, self._output_names)
            results: list[Tensors | LeanserveError]
            if len(job.batch) == 1 and not self.batching:
                results = [outputs]
            else:
                results = list(split_rows(outputs, [r.rows for r in job.batch]))
        except LeanserveError as e:
            if len(job.batch) == 1 or isinstance(e, DeadlineExceeded):  # a run cut short: alone, it would be too
                results = [e] * len(job.batch)
            else:
                results = [self._execute(_Job([r], dict(r.inputs))).results[0] for r in job.batch]
        except Exception as e:  # an engine bug must not leave callers hanging
            log.exception("model %s: the engine raised", self._stats.name)
            results = [InferenceFailed(f"inference failed: {type(e).__name__}: {e}")] * len(job.batch)
        return _Done(job.batch, results, time.perf_counter() - start)

    def _stuck(self, job: _Job) -> None:
        """The engine did not come back from a run: fail its callers and everything queued, for good."""
        self._watchdog = None
        job.abandoned = True
        reason = (
            f"model {self._stats.name!r} version {self._stats.version} is unavailable: its engine did not return "
            f"from a run within {watchdog_seconds(self._run_timeout):g} s (runtime.timeout_ms "
            f"{self._run_timeout * 1000:g}) and was not cancelled"
        )
        log.error("%s", reason)
        self.broken = reason
        self._closed = True
        for r in job.batch:
            self._answer(r, None, DeadlineExceeded(f"the model's run did not finish: {reason}"))
        while self._pending:
            r = self._pending.popleft()
            self._answer(r, None, ModelNotReady(reason, hint="load the model again (model control) or restart"))
        self._queued_rows = 0
        self._busy = False
        self._idle.set()
        self._idle_set = True
        if self._on_stuck is not None:
            self._on_stuck(reason)

    def _finish(self, done: _Done, threaded: bool = False) -> None:
        """Account for a finished batch and answer its callers; ``threaded``: it ran on the engine thread."""
        if self._watchdog is not None:
            self._watchdog.cancel()
            self._watchdog = None
        rows = sum(r.rows for r in done.batch)
        self._stats.record_batch(rows if self.batching else len(done.batch), done.seconds)
        if self._tuner is not None and done.seconds > 0:
            self._tuner.observe(rows, done.seconds)
        if rows == 1:
            previous = self._single_cost
            self._single_cost = done.seconds if previous is None else 0.8 * previous + 0.2 * done.seconds
        elif rows > 1:
            per_row = done.seconds / rows
            previous = self._row_cost
            self._row_cost = per_row if previous is None else 0.8 * previous + 0.2 * per_row
        self._busy = False
        if threaded and self._pending and self._flush_handle is None:
            # The engine thread is idle until the next batch reaches it: hand it that batch before
            # answering this one (encoding and sending answers takes the loop ~0.3 ms a request), so
            # under a standing queue the engine waits only for the loop's wake-up. Only after a
            # threaded run: an inline one returns here from _flush, and must not start the next.
            self._flush()
        for request, result in zip(done.batch, done.results, strict=True):
            if isinstance(result, LeanserveError):
                self._answer(request, None, result)
            else:
                self._answer(request, result, None)
        if not self._busy:
            self._after_batch()

    def _after_batch(self) -> None:
        """Not busy: flush what is queued, or say the batcher is idle."""
        if self._pending:
            assert self._loop is not None
            if self._flush_handle is None:
                # Requests that piled up while busy have waited already: flush right away.
                self._flush_handle = self._loop.call_soon(self._flush)
        else:
            if self._backlog or self._codel.overloaded or self._codel.above:
                self._codel.idle()
            self._backlog = False
            self._idle.set()
            self._idle_set = True


__all__ = [
    "Batcher",
    "Caller",
    "QueuedRequest",
    "batch_key",
    "flush_delay",
    "runs_inline",
    "split_rows",
    "take_batch",
]
