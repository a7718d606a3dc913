"""A processed model version: its steps (preprocess -> engine -> postprocess -> more steps), as one model.

What a model without a handler, ragged inputs or steps never touches: the router sends its
requests straight to its :class:`~leanserve.batching.Batcher`, as before. A processed version
gets a :class:`Processor` instead, which the router calls with the request's id and deadline:

- ``preprocess`` (``handler.py``): the dynamic batch of requests as the client sent them, on its
  own thread; requests that send the engine's own inputs (token ids) skip it.
- the engine: ragged inputs padded per batch (:mod:`.ragged`), the requests that share a run
  chosen by what padding costs against a run of their own (:mod:`.grouping`).
- ``postprocess`` (``handler.py``), then ``[handler] steps``: ``function:NAME`` (a function of the
  handler file, taking the batch's tensors and the requests' inputs) or ``model:NAME[:VERSION]``
  (another model of the repository, through its own batcher, sharing batches with its direct
  callers). Arrays pass from step to step by reference: no copies, no serialization.

Every step carries the request's deadline (the caller's, or ``timeout_ms`` after arrival,
whichever is first): a request that expires is dropped at whatever step it waits for. Each step's
time goes to the version's statistics (``steps`` in ``/stats``, ``leanserve_step_duration_seconds``).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np

from ..batch_size import BatchSizeTuner
from ..batching import Batcher, batch_key, split_rows
from ..config import HandlerConfig, ModelConfig, TensorSpec
from ..errors import InferenceFailed, InvalidInput, LeanserveError, Overloaded
from ..protocol import InferRequest, validate_request
from ..runtimes import Runtime
from ..stats import ModelStats
from .grouping import Queued, RunCost, run_with_oldest
from .handler import BatchFunction, Handler, as_tensors
from .ragged import Padding, pad_batch, ragged_key, ragged_length, with_mask
from .stages import Done, Item, Stage, answer, late

if TYPE_CHECKING:
    from ..registry import ModelRegistry

log = logging.getLogger("leanserve.processing")

Tensors = dict[str, np.ndarray]
DEFAULT_TIMEOUT_SECONDS = 30.0


class CallModel(Protocol):
    """Runs tensors on another model of the repository (a ``model:`` step); answers through ``done``."""

    def __call__(
        self, name: str, version: str | None, inputs: Tensors, rows: int, request_id: str, deadline: float, done: Done
    ) -> None: ...


class _ModelStep:
    """A ``model:NAME`` step: no thread of its own; the target model's batcher runs it."""

    def __init__(
        self,
        name: str,
        target: str,
        version: str | None,
        call: CallModel,
        forward: Callable[[Item, Tensors], None],
        record: Callable[[list[Item], float], None],
    ) -> None:
        self.name = name
        self._target = target
        self._version = version
        self._call = call
        self._forward = forward
        self._record = record
        self.in_flight = 0

    @property
    def queued(self) -> int:
        return 0

    @property
    def busy(self) -> bool:
        return self.in_flight > 0

    def put(self, item: Item) -> None:
        start = time.perf_counter()
        self.in_flight += 1

        def done(outputs: Tensors | None, error: LeanserveError | None) -> None:
            self.in_flight -= 1
            self._record([item], time.perf_counter() - start)
            if error is not None or outputs is None:
                answer(item, None, error or InferenceFailed(f"step {self.name!r} gave no outputs"))
                return
            try:
                self._forward(item, outputs)
            except LeanserveError as e:
                answer(item, None, e)

        self._call(self._target, self._version, item.tensors, item.rows, item.request_id, item.deadline, done)

    def close(self) -> None:
        pass


class _BatcherStep:
    """The engine step of a model whose inputs are not ragged: the model's own batcher, as for a plain
    model (its batch-size tuner, inline runs of cheap batches), so a client sending the engine's
    tensors pays a few microseconds over a plain model, not a thread hand-off."""

    def __init__(self, batcher: Batcher, forward: Callable[[Item, Tensors], None], stats: ModelStats) -> None:
        self.name = "engine"
        self._batcher = batcher
        self._forward = forward
        self._stats = stats
        self._loop: asyncio.AbstractEventLoop | None = None

    @property
    def queued(self) -> int:
        return self._batcher.queued

    def put(self, item: Item) -> None:
        loop = self._loop or asyncio.get_running_loop()
        self._loop = loop
        if item.deadline <= loop.time():
            answer(item, None, late(self._stats.name, item, "waiting for", self.name))
            return
        start = time.perf_counter()

        def done(outputs: Tensors | None, error: LeanserveError | None) -> None:
            self._stats.record_step(self.name, time.perf_counter() - start)
            if error is not None or outputs is None:
                answer(item, None, error or InferenceFailed("the engine gave no outputs"))
                return
            if item.deadline <= loop.time():
                answer(item, None, late(self._stats.name, item, "in", self.name))
                return
            try:
                self._forward(item, outputs)
            except LeanserveError as e:
                answer(item, None, e)

        self._batcher.submit(item.tensors, item.rows, done)

    def close(self) -> None:
        pass


Step = Stage | _ModelStep | _BatcherStep


class Processor:
    """One processed model version: where the router sends its requests instead of a batcher."""

    def __init__(
        self,
        runtime: Runtime,
        config: ModelConfig,
        stats: ModelStats,
        hc: HandlerConfig | None,
        handler: Handler | None,
        call_model: CallModel | None = None,
    ) -> None:
        self.name = config.name
        self.config = config
        self._runtime = runtime
        self._stats = stats
        self._batching = config.batching
        self._max_rows = config.max_batch_size or 0
        self._padding = Padding.of(config.inputs)
        self._run_cost = RunCost()  # a ragged engine's fixed cost per run, in padded tokens
        self._timeout = hc.timeout_ms / 1000.0 if hc is not None else DEFAULT_TIMEOUT_SECONDS
        self.engine_inputs: tuple[TensorSpec, ...] = config.inputs
        self.inputs: tuple[TensorSpec, ...] = hc.inputs if hc is not None and hc.inputs else config.inputs
        self.outputs: tuple[TensorSpec, ...] = hc.outputs if hc is not None and hc.outputs else config.outputs
        self._engine_names = frozenset(s.name for s in config.inputs if not s.mask)
        self._engine_all = frozenset(s.name for s in config.inputs)
        self._public_names = frozenset(s.name for s in self.inputs)
        self._in_flight = 0
        # As the batcher's queue: beyond this many requests in the steps, a 503 and a hint to retry.
        self._max_queue = config.dynamic_batching.max_queue_size
        self._drained: asyncio.Event | None = None

        steps: list[Step] = []
        if handler is not None and handler.preprocess is not None:
            steps.append(self._function_step("preprocess", handler.preprocess, with_requests=False, index=len(steps)))
        self.engine_step = len(steps)
        tuner = (
            BatchSizeTuner(self._max_rows)
            if config.dynamic_batching.adaptive_batch_size and self._max_rows > 1
            else None
        )
        self._batcher: Batcher | None = None
        if self._padding is None:
            self._batcher = Batcher(runtime, self._max_rows, config.dynamic_batching, stats)
            steps.append(_BatcherStep(self._batcher, self._forwarder(len(steps)), stats))
        else:
            steps.append(
                Stage(
                    self.name,
                    "engine",
                    self._run_engine,
                    self._engine_key,
                    self._max_rows,
                    self._forwarder(len(steps)),
                    self._recorder("engine", engine=True),
                    tuner,
                    self._choose_ragged,
                    self._useful_tokens,
                )
            )
        if handler is not None and handler.postprocess is not None:
            steps.append(self._function_step("postprocess", handler.postprocess, with_requests=True, index=len(steps)))
        for spec in hc.steps if hc is not None else ():
            kind, _, rest = spec.partition(":")
            if kind == "function":
                if handler is None:
                    raise InvalidInput(
                        f"model {self.name!r}: step {spec!r} names a function but there is no handler file"
                    )
                steps.append(
                    self._function_step(
                        rest, _two_arguments(handler.function(rest)), with_requests=True, index=len(steps)
                    )
                )
            else:
                if call_model is None:
                    raise InvalidInput(f"model {self.name!r}: step {spec!r} needs the repository's other models")
                target, _, version = rest.partition(":")
                steps.append(
                    _ModelStep(
                        spec, target, version or None, call_model, self._forwarder(len(steps)), self._recorder(spec)
                    )
                )
        self._steps = steps

    # ---- the router's side -------------------------------------------------------------------

    @property
    def queued(self) -> int:
        return sum(s.queued for s in self._steps)

    def validate(self, request: InferRequest) -> tuple[int, int]:
        """(rows, the step the request enters at): its public inputs, or the engine's own (token ids)."""
        sent = {i.name for i in request.inputs}
        if sent and sent <= self._engine_all and not sent & self._public_names:
            specs = [s for s in self.engine_inputs if not (s.mask and s.name not in sent)]
            return validate_request(request, specs, self.outputs, self._max_rows), self.engine_step
        return validate_request(request, self.inputs, self.outputs, self._max_rows), 0

    def submit(
        self, request_id: str, inputs: Tensors, rows: int, deadline: float | None, done: Done, entry: int = 0
    ) -> None:
        """Queue one request at step ``entry``; ``done`` gets its public outputs or its error."""
        if self._in_flight >= self._max_queue:
            done(
                None,
                Overloaded(
                    f"model {self.name!r} has {self._in_flight} requests in its steps, the most allowed",
                    hint="retry later, or raise dynamic_batching.max_queue_size",
                    retry_after=1,
                ),
            )
            return
        now = asyncio.get_running_loop().time()
        limit = now + self._timeout
        item = Item(request_id, inputs, inputs, rows, limit if deadline is None or deadline > limit else deadline, done)
        self._in_flight += 1
        item.done = self._counted(done)
        if entry == self.engine_step and self._padding is not None:
            try:
                item.tensors = with_mask(inputs, self._padding)
            except LeanserveError as e:
                answer(item, None, e)
                return
        item.step = entry
        self._steps[entry].put(item)

    async def drain(self) -> None:
        """Wait until every accepted request is answered (a hung step is bounded by the deadlines)."""
        while self._in_flight:
            self._drained = asyncio.Event()
            await self._drained.wait()

    async def close(self) -> None:
        await self.drain()
        if self._batcher is not None:
            await self._batcher.close()
        for step in self._steps:
            step.close()

    # ---- steps -------------------------------------------------------------------------------

    def _counted(self, done: Done) -> Done:
        def counted(tensors: Tensors | None, error: LeanserveError | None) -> None:
            self._in_flight -= 1
            if self._in_flight == 0 and self._drained is not None:
                self._drained.set()
            done(tensors, error)

        return counted

    def _function_step(self, name: str, fn: BatchFunction, with_requests: bool, index: int) -> Stage:
        where = f"{self.name}/handler {name}"

        def run(batch: list[Item]) -> Sequence[Tensors]:
            tensors = [i.tensors for i in batch]
            out = fn(tensors, [i.inputs for i in batch]) if with_requests else fn(tensors)
            if not isinstance(out, (list, tuple)):
                raise TypeError(f"{where} returned {type(out).__name__}, expected a list with one dict per request")
            return [as_tensors(o, where) for o in out]

        return Stage(self.name, name, run, _names_key, self._max_rows, self._forwarder(index), self._recorder(name))

    def _engine_key(self, item: Item) -> tuple[object, ...]:
        if self._padding is not None:
            return ragged_key(item.tensors, self._padding)
        return batch_key(item.tensors, self._batching)

    def _choose_ragged(self, pending: Sequence[Item], max_rows: int) -> list[int]:
        """The next ragged batch: the oldest request and those whose padding costs less than a run of
        their own (grouping.py), among the next ``2 * max_rows`` compatible requests of the queue."""
        if max_rows <= 0 or len(pending) == 1:
            return [0]
        padding = self._padding
        assert padding is not None
        head = pending[0]
        key = ragged_key(head.tensors, padding)
        indices = [0]
        queued = [Queued(ragged_length(head.tensors, padding), head.rows)]
        window = 2 * max_rows  # bounds the plan's cost on a long queue; a run takes max_rows at most
        for i in range(1, len(pending)):
            if len(indices) >= window:
                break
            item = pending[i]
            if item.rows <= max_rows and ragged_key(item.tensors, padding) == key:
                indices.append(i)
                queued.append(Queued(ragged_length(item.tensors, padding), item.rows))
        if len(indices) == 1:
            return indices
        return [indices[k] for k in run_with_oldest(queued, max_rows, self._run_cost.overhead_tokens)]

    def _useful_tokens(self, batch: list[Item]) -> float:
        """A ragged batch's useful work: its requests' own tokens, padding left out."""
        padding = self._padding
        assert padding is not None
        return float(sum(i.rows * max(1, ragged_length(i.tensors, padding)) for i in batch))

    def _run_engine(self, batch: list[Item]) -> Sequence[Tensors]:
        parts = [i.tensors for i in batch]
        if self._padding is not None:
            inputs = pad_batch(parts, self._padding)
        elif len(parts) == 1:
            inputs = parts[0]
        else:
            inputs = {name: np.concatenate([p[name] for p in parts]) for name in parts[0]}
        outputs = self._runtime.run(inputs, None)
        if len(batch) == 1 and not self._batching:
            return [outputs]
        return split_rows(outputs, [i.rows for i in batch])

    def _forwarder(self, index: int) -> Callable[[Item, Tensors], None]:
        """What happens to a request's result at step ``index``: on to the next step, or answered."""

        def forward(item: Item, result: Tensors) -> None:
            following = index + 1
            if following == self.engine_step:
                result = self._engine_inputs(item, result)
            elif index == self.engine_step and item.extras:
                result = {**item.extras, **result}
            item.tensors = result
            item.step = following
            if following < len(self._steps):
                self._steps[following].put(item)
            else:
                answer(item, self._public_outputs(item, result), None)

        return forward

    def _engine_inputs(self, item: Item, result: Tensors) -> Tensors:
        missing = [n for n in self._engine_names if n not in result]
        if missing:
            raise self._bug(item, f"preprocess gave no {', '.join(map(repr, sorted(missing)))} (the engine's inputs)")
        extras = {n: a for n, a in result.items() if n not in self._engine_all}
        if extras:
            item.extras = extras
            result = {n: a for n, a in result.items() if n in self._engine_all}
        if self._batching:
            for name, array in result.items():
                if array.ndim == 0 or array.shape[0] != item.rows:
                    raise self._bug(
                        item,
                        f"preprocess gave {name!r} shape {list(array.shape)} for a request of {item.rows} rows",
                    )
        return with_mask(result, self._padding) if self._padding is not None else result

    def _public_outputs(self, item: Item, result: Tensors) -> Tensors:
        for spec in self.outputs:
            array = result.get(spec.name)
            if array is None:
                raise self._bug(item, f"the last step gave no output {spec.name!r}")
            if self._batching and (array.ndim == 0 or array.shape[0] != item.rows):
                raise self._bug(
                    item, f"output {spec.name!r} has shape {list(array.shape)}, expected {item.rows} rows first"
                )
        return result

    def _bug(self, item: Item, what: str) -> InferenceFailed:
        log.error("model %s: request %s: %s", self.name, item.request_id, what)
        return InferenceFailed(f"model {self.name!r}: {what}")

    def _recorder(self, name: str, engine: bool = False) -> Callable[[list[Item], float], None]:
        stats = self._stats
        padding = self._padding if engine else None  # a ragged engine's runs teach its run cost

        def record(batch: list[Item], seconds: float) -> None:
            stats.record_step(name, seconds)
            if engine:
                stats.record_batch(sum(i.rows for i in batch) if self._batching else len(batch), seconds)
            if padding is not None and batch:
                longest = max(ragged_length(i.tensors, padding) for i in batch)
                self._run_cost.observe(sum(i.rows for i in batch) * longest, seconds)
            first = batch[0].step == 0 if batch else False
            if first:
                started = time.perf_counter() - seconds
                for i in batch:
                    stats.record_queue(max(0.0, started - i.enqueued))

        return record


def _names_key(item: Item) -> tuple[object, ...]:
    return tuple(sorted(item.tensors))


def _two_arguments(fn: BatchFunction) -> BatchFunction:
    import inspect

    try:
        required = [p for p in inspect.signature(fn).parameters.values() if p.default is p.empty]
    except (TypeError, ValueError):
        return fn
    return (lambda outputs, requests: fn(outputs)) if len(required) == 1 else fn


def model_caller(registry: ModelRegistry) -> CallModel:
    """How ``model:`` steps reach another model of the repository: acquire, its batcher, release."""
    tasks: set[asyncio.Task[None]] = set()

    def call(
        name: str, version: str | None, inputs: Tensors, rows: int, request_id: str, deadline: float, done: Done
    ) -> None:
        try:
            lease = registry.acquire_now(name, version)
        except LeanserveError as e:
            done(None, e)
            return
        if lease is not None:
            submit(lease, inputs, rows, request_id, deadline, done)
            return

        async def after_load() -> None:
            try:
                loaded = await registry.acquire(name, version, deadline)
            except LeanserveError as e:
                done(None, e)
                return
            submit(loaded, inputs, rows, request_id, deadline, done)

        task = asyncio.get_running_loop().create_task(after_load())
        tasks.add(task)
        task.add_done_callback(tasks.discard)

    def submit(lease: Any, inputs: Tensors, rows: int, request_id: str, deadline: float, done: Done) -> None:
        def finish(outputs: Tensors | None, error: LeanserveError | None) -> None:
            registry.release(lease)
            done(outputs, error)

        target = lease.batcher
        if isinstance(target, Processor):
            target.submit(request_id, inputs, rows, deadline, finish)
        else:
            target.submit(inputs, rows, finish)

    return call


__all__ = ["CallModel", "Processor", "model_caller"]
