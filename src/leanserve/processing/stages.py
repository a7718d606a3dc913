"""One step of a processed model: its queue, its own thread, deadlines, timeouts and culprit search.

A :class:`Stage` takes requests one by one on the event loop, runs them in batches on its own
thread (so a preprocess never blocks the loop, and the next batch's preprocessing overlaps the
current batch's inference on the next stage's thread), and hands each request's result to
whatever comes next. The rules, the same at every step:

- A request whose deadline passed (its client's, or the model's ``timeout_ms``) is dropped with a
  504 before a step starts it; one whose step is still running at its deadline is answered 504
  then, and the step's late result is thrown away.
- A call that outlives every request it carries is hung: its thread is left behind (Python cannot
  stop a thread) and a fresh one serves the step, so the model keeps answering.
- A batch that raises is rerun one request at a time, so only the culprit fails (as the batcher
  does for engine failures). A :class:`~leanserve.errors.LeanserveError` keeps its status
  (``InvalidInput``: 400); anything else is a 500, logged with the request id and traceback.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import queue
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np

from ..batch_size import BatchSizeTuner
from ..errors import DeadlineExceeded, InferenceFailed, LeanserveError

log = logging.getLogger("leanserve.processing")

Tensors = dict[str, np.ndarray]
# Called once, on the event loop, with the request's final tensors or its error.
Done = Callable[[Tensors | None, LeanserveError | None], None]


@dataclass(slots=True, eq=False)
class Item:
    """One request on its way through a processed model's steps."""

    request_id: str
    inputs: Tensors  # as the client sent them (a postprocess may read them)
    tensors: Tensors  # what the next step takes
    rows: int
    deadline: float  # event-loop time after which the answer is useless
    done: Done
    # What a preprocess returned beside the engine's inputs: it skips the engine and reaches the
    # next step with the engine's outputs (an image's size, for a postprocess to restore it).
    extras: Tensors | None = None
    step: int = 0  # index of the step it is in
    answered: bool = False
    enqueued: float = field(default_factory=time.perf_counter)


# A step's work on a batch: one result per request, in order; raising fails the batch.
Run = Callable[[list[Item]], Sequence[Tensors]]
Key = Callable[[Item], tuple[object, ...]]
Forward = Callable[[Item, Tensors], None]
Record = Callable[[list[Item], float], None]
# Which queued requests run next (indices, the oldest first), at most this many rows: :func:`choose`
# by default; the ragged engine's choice weighs padding against runs (grouping.py).
Choose = Callable[[Sequence[Item], int], list[int]]
# A batch's useful work for the batch-size tuner (rows by default; tokens for a ragged engine).
Work = Callable[[list[Item]], float]


def choose(pending: Sequence[Item], key: Key, max_rows: int) -> list[int]:
    """Indices of the next batch: the oldest request, then every one with its key that fits."""
    if not pending:
        return []
    if max_rows <= 0:
        return [0]
    head = key(pending[0])
    chosen = [0]
    rows = pending[0].rows
    for i in range(1, len(pending)):
        if rows >= max_rows:
            break
        item = pending[i]
        if rows + item.rows <= max_rows and key(item) == head:
            chosen.append(i)
            rows += item.rows
    return chosen


def answer(item: Item, tensors: Tensors | None, error: LeanserveError | None) -> None:
    """Answer a request once; later answers (a late result after a timeout) are dropped."""
    if item.answered:
        return
    item.answered = True
    try:
        item.done(tensors, error)
    except Exception:  # one caller's broken callback must not starve the rest of the batch
        log.exception("error delivering a result for request %s", item.request_id)


def late(model: str, item: Item, where: str, step: str) -> DeadlineExceeded:
    """The 504 of a request whose deadline passed ``where`` ("waiting for", "in") a step."""
    return DeadlineExceeded(
        f"model {model!r}: request {item.request_id} passed its deadline {where} step {step!r}",
        hint="the model's [handler] timeout_ms, or the caller's own deadline, bounds a request",
    )


class _Worker:
    """The thread a stage runs its calls on; replaced when a call hangs."""

    def __init__(self, name: str) -> None:
        self.jobs: queue.SimpleQueue[Callable[[], None] | None] = queue.SimpleQueue()
        self.thread = threading.Thread(target=self._serve, name=name, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        while (job := self.jobs.get()) is not None:
            job()


class Stage:
    """One step of a processed model: a queue on the event loop and a thread that runs its batches."""

    def __init__(
        self,
        model: str,
        name: str,
        run: Run,
        key: Key,
        max_rows: int,
        forward: Forward,
        record: Record,
        tuner: BatchSizeTuner | None = None,
        choose_batch: Choose | None = None,
        work: Work | None = None,
    ) -> None:
        self.model = model
        self.name = name
        self._run = run
        self._max_rows = max_rows
        self._forward = forward
        self._record = record
        self._tuner = tuner
        self._choose: Choose = choose_batch or (lambda pending, limit: choose(pending, key, limit))
        self._batch_work = work
        self._pending: deque[Item] = deque()
        self._running: list[Item] = []
        self._token: object | None = None  # the running call; None when idle
        self._timer: asyncio.TimerHandle | None = None
        self._flush_handle: asyncio.Handle | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._worker: _Worker | None = None
        self.abandoned = 0  # hung calls whose threads were left behind

    @property
    def queued(self) -> int:
        return len(self._pending)

    @property
    def busy(self) -> bool:
        return self._token is not None or bool(self._pending)

    def put(self, item: Item) -> None:
        """Queue a request (on the event loop)."""
        if self._loop is None:
            self._loop = asyncio.get_running_loop()
        item.enqueued = time.perf_counter()
        self._pending.append(item)
        if self._token is None and self._flush_handle is None:
            self._flush_handle = self._loop.call_soon(self._flush)

    def close(self) -> None:
        """Stop the thread once the queue is empty (the caller drained it)."""
        if self._worker is not None:
            self._worker.jobs.put(None)
            self._worker = None

    # ---- on the event loop -------------------------------------------------------------------

    def _flush(self) -> None:
        self._flush_handle = None
        if self._token is not None or not self._pending:
            return
        assert self._loop is not None
        now = self._loop.time()
        if any(i.answered or i.deadline <= now for i in self._pending):
            live: deque[Item] = deque()
            for item in self._pending:
                if item.answered:
                    continue
                if item.deadline <= now:
                    answer(item, None, self._late(item, "waiting for"))
                else:
                    live.append(item)
            self._pending = live
            if not live:
                return
        limit = self._tuner.limit() if self._tuner is not None else self._max_rows
        indices = self._choose(self._pending, limit)
        if indices[-1] == len(indices) - 1:
            batch = [self._pending.popleft() for _ in indices]
        else:
            chosen = set(indices)
            batch = [item for i, item in enumerate(self._pending) if i in chosen]
            self._pending = deque(item for i, item in enumerate(self._pending) if i not in chosen)
        token = object()
        self._token = token
        self._running = batch
        if self._worker is None:
            self._worker = _Worker(f"leanserve-{self.model}-{self.name}")
        loop = self._loop
        self._worker.jobs.put(lambda: self._work(loop, token, batch))
        self._watch(token)

    def _watch(self, token: object) -> None:
        assert self._loop is not None
        earliest = min(i.deadline for i in self._running if not i.answered)
        self._timer = self._loop.call_at(earliest, self._overdue, token)

    def _overdue(self, token: object) -> None:
        """A request's deadline came while its batch runs: answer it now; leave a hung call behind."""
        if token is not self._token:
            return
        assert self._loop is not None
        now = self._loop.time()
        for item in self._running:
            if not item.answered and item.deadline <= now:
                answer(item, None, self._late(item, "in"))
        if any(not i.answered for i in self._running):
            self._watch(token)
            return
        # Nobody waits for this call any more: a fresh thread serves the step from now on.
        log.error(
            "model %s: step %r is still running for requests %s past their deadline; its thread is left behind",
            self.model,
            self.name,
            ", ".join(i.request_id for i in self._running),
        )
        self.abandoned += 1
        if self._worker is not None:
            self._worker.jobs.put(None)  # if the call ever returns, that thread ends
            self._worker = None
        self._idle()

    def _finished(
        self, token: object, batch: list[Item], results: list[Tensors | LeanserveError], seconds: float
    ) -> None:
        if token is not self._token:
            return  # abandoned: every request of it was answered already
        self._record(batch, seconds)
        if self._tuner is not None and seconds > 0:
            work = self._batch_work(batch) if self._batch_work is not None else None
            self._tuner.observe(sum(i.rows for i in batch), seconds, work)
        self._idle()
        for item, result in zip(batch, results, strict=True):
            if item.answered:
                continue
            if isinstance(result, LeanserveError):
                answer(item, None, result)
            else:
                try:
                    self._forward(item, result)
                except LeanserveError as e:
                    answer(item, None, e)

    def _idle(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self._token = None
        self._running = []
        if self._pending and self._flush_handle is None:
            assert self._loop is not None
            self._flush_handle = self._loop.call_soon(self._flush)

    def _late(self, item: Item, where: str) -> DeadlineExceeded:
        return late(self.model, item, where, self.name)

    # ---- on the stage's thread ---------------------------------------------------------------

    def _work(self, loop: asyncio.AbstractEventLoop, token: object, batch: list[Item]) -> None:
        start = time.perf_counter()
        results = self._call(batch)
        seconds = time.perf_counter() - start
        with contextlib.suppress(RuntimeError):  # the loop closed while a hung call ran
            loop.call_soon_threadsafe(self._finished, token, batch, results, seconds)

    def _call(self, batch: list[Item]) -> list[Tensors | LeanserveError]:
        try:
            results = list(self._run(batch))
            if len(results) != len(batch):
                raise TypeError(f"returned {len(results)} results for a batch of {len(batch)} requests")
            return list(results)
        except Exception as e:
            if len(batch) > 1:
                # Rerun each request alone: only the culprit fails.
                # (A request answered meanwhile, by its deadline, is not run again.)
                return [self._late(item, "in") if item.answered else self._call([item])[0] for item in batch]
            return [self._error(batch[0], e)]

    def _error(self, item: Item, e: Exception) -> LeanserveError:
        if isinstance(e, LeanserveError):
            return e
        log.error("model %s: step %r failed for request %s", self.model, self.name, item.request_id, exc_info=e)
        return InferenceFailed(f"model {self.model!r}: step {self.name!r} failed: {type(e).__name__}: {e}")


__all__ = ["Choose", "Done", "Item", "Stage", "Work", "answer", "choose", "late"]
