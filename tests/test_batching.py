"""The batcher: pure flush/selection policy, and the mechanism with a real ONNX Runtime model."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable, Mapping, Sequence

import numpy as np
import pytest

from leanserve.batching import (
    Batcher,
    QueuedRequest,
    batch_key,
    flush_delay,
    runs_inline,
    split_rows,
    take_batch,
)
from leanserve.config import DynamicBatching
from leanserve.errors import DeadlineExceeded, InferenceFailed, InvalidInput, ModelNotReady, Overloaded
from leanserve.runtimes import EngineTensor
from leanserve.stats import ModelStats


def _queued(rows: int, width: int = 4) -> QueuedRequest:
    inputs = {"x": np.zeros((rows, width), np.float32)}
    return QueuedRequest(inputs, rows, batch_key(inputs, True), lambda outputs, error: None)


def test_take_batch_takes_compatible_requests_in_order_up_to_the_limit() -> None:
    pending = [_queued(2), _queued(1, width=8), _queued(3), _queued(4), _queued(1)]
    assert take_batch(pending, max_rows=6) == [0, 2, 4]  # width 8 never joins width 4; 4 rows would overflow


def test_take_batch_without_batching_takes_one() -> None:
    assert take_batch([_queued(1), _queued(1)], max_rows=0) == [0]
    assert take_batch([], max_rows=8) == []


def test_flush_delay_is_zero_by_default_and_waits_for_companions_when_asked() -> None:
    assert flush_delay(10.0, 10.0, 1, 32, DynamicBatching()) == 0.0
    cfg = DynamicBatching(max_queue_delay_ms=5)
    assert flush_delay(10.0, 10.0, 1, 32, cfg) == pytest.approx(0.005)
    assert flush_delay(10.004, 10.0, 1, 32, cfg) == pytest.approx(0.001)
    assert flush_delay(10.0, 10.0, 32, 32, cfg) == 0.0  # full: go
    assert flush_delay(10.0, 10.0, 8, 32, DynamicBatching(5, (4, 8))) == 0.0  # preferred size reached


def test_runs_inline_only_what_was_measured_cheap_and_never_with_a_run_timeout() -> None:
    assert runs_inline(0.00002, 0.0003, 0.0)  # a tiny model's run: cheaper than the hand-off
    assert not runs_inline(None, 0.0003, 0.0)  # not measured yet: the thread
    assert not runs_inline(0.0003, 0.0003, 0.0)  # as dear as the hand-off: the thread
    assert not runs_inline(0.02, 0.0003, 0.0)
    # With runtime.timeout_ms the watchdog must be able to answer for a run that never returns,
    # which it cannot when that run holds the event loop.
    assert not runs_inline(0.00002, 0.0003, 0.5)


def test_split_rows_gives_each_caller_its_rows_and_refuses_a_wrong_batch_dimension() -> None:
    out = {"y": np.arange(6).reshape(6, 1)}
    parts = split_rows(out, [1, 3, 2])
    assert [p["y"].ravel().tolist() for p in parts] == [[0], [1, 2, 3], [4, 5]]
    with pytest.raises(InferenceFailed, match="first dimension of 5"):
        split_rows(out, [2, 3])


def test_split_rows_one_row_each_gives_the_same_views_as_slicing() -> None:
    y = np.arange(12, dtype=np.float32).reshape(4, 3)
    z = np.arange(4, dtype=np.int64)  # a 1-D output: each request's part keeps its batch dimension
    for outputs in ({"y": y}, {"y": y, "z": z}):
        parts = split_rows(outputs, [1, 1, 1, 1])
        for i, part in enumerate(parts):
            assert part.keys() == outputs.keys()
            for name, array in outputs.items():
                assert part[name].shape == array[i : i + 1].shape and part[name].flags.c_contiguous
                np.testing.assert_array_equal(part[name], array[i : i + 1])
    # Counts that add up to one a request but are not (an empty request beside a double one): the long way.
    parts = split_rows({"y": y[:2]}, [0, 2])
    assert [p["y"].shape for p in parts] == [(0, 3), (2, 3)]


class RecordingRuntime:
    """A deterministic engine (row-wise affine map) that records the batch sizes it ran."""

    def __init__(self, delay: float = 0.0, fail_on: float | None = None) -> None:
        self.batches: list[int] = []
        self.delay = delay
        self.fail_on = fail_on
        self.threads: set[str] = set()

    inputs = (EngineTensor("x", "FP32", (-1, 4)),)
    outputs = (EngineTensor("y", "FP32", (-1, 4)),)
    providers = ("test",)

    def run(self, inputs: Mapping[str, np.ndarray], output_names: Sequence[str] | None = None) -> dict[str, np.ndarray]:
        x = inputs["x"]
        self.threads.add(threading.current_thread().name)
        self.batches.append(x.shape[0])
        if self.delay:
            time.sleep(self.delay)
        if self.fail_on is not None and (x == self.fail_on).any():
            raise InvalidInput("poisoned row")
        return {"y": x * 2 + 1}

    def close(self) -> None:
        pass


def _batcher(runtime: RecordingRuntime, max_batch: int = 8, **kw: object) -> Batcher:
    return Batcher(runtime, max_batch, DynamicBatching(**kw), ModelStats("m", "1"))  # type: ignore[arg-type]


async def test_concurrent_requests_are_batched_and_each_gets_exactly_its_rows() -> None:
    runtime = RecordingRuntime(delay=0.01)
    batcher = _batcher(runtime, max_batch=8)
    rng = np.random.default_rng(0)
    xs = [rng.normal(size=(int(rng.integers(1, 4)), 4)).astype(np.float32) for _ in range(40)]
    results = await asyncio.gather(*(batcher.infer({"x": x}, x.shape[0]) for x in xs))
    for x, r in zip(xs, results, strict=True):
        np.testing.assert_array_equal(r["y"], x * 2 + 1)
    assert max(runtime.batches) > 1, "requests that piled up while busy were batched"
    assert max(runtime.batches) <= 8
    assert sum(runtime.batches) == sum(x.shape[0] for x in xs)
    await batcher.close()


async def test_shapes_that_differ_are_never_mixed() -> None:
    runtime = RecordingRuntime(delay=0.005)
    batcher = Batcher(runtime, 8, DynamicBatching(), ModelStats("m", "1"))  # type: ignore[arg-type]
    a = [np.full((1, 4), i, np.float32) for i in range(5)]
    b = [np.full((1, 3), i, np.float32) for i in range(5)]
    futures = [batcher.infer({"x": x}, 1) for pair in zip(a, b, strict=True) for x in pair]
    results = await asyncio.gather(*futures)
    for x, r in zip([x for pair in zip(a, b, strict=True) for x in pair], results, strict=True):
        assert r["y"].shape == x.shape
        np.testing.assert_array_equal(r["y"], x * 2 + 1)
    await batcher.close()


async def test_a_lone_request_on_an_idle_model_is_not_held_back() -> None:
    batcher = _batcher(RecordingRuntime(), max_batch=32)
    start = time.perf_counter()
    await batcher.infer({"x": np.ones((1, 4), np.float32)}, 1)
    assert time.perf_counter() - start < 0.5  # generous: no queue delay configured
    await batcher.close()


async def test_queue_delay_gathers_companions() -> None:
    runtime = RecordingRuntime()
    batcher = _batcher(runtime, max_batch=32, max_queue_delay_ms=50, adaptive_batch_size=False)
    first = asyncio.ensure_future(batcher.infer({"x": np.ones((1, 4), np.float32)}, 1))
    await asyncio.sleep(0.01)
    second = asyncio.ensure_future(batcher.infer({"x": np.ones((1, 4), np.float32)}, 1))
    await asyncio.gather(first, second)
    assert runtime.batches == [2]
    await batcher.close()


async def test_a_failing_request_does_not_take_its_batch_companions_down() -> None:
    runtime = RecordingRuntime(delay=0.01, fail_on=-7.0)
    batcher = _batcher(runtime, max_batch=8)
    xs = [np.full((1, 4), float(i), np.float32) for i in range(6)] + [np.full((1, 4), -7.0, np.float32)]
    results = await asyncio.gather(*(batcher.infer({"x": x}, 1) for x in xs), return_exceptions=True)
    assert isinstance(results[-1], InvalidInput)
    for x, r in zip(xs[:-1], results[:-1], strict=True):
        assert isinstance(r, dict)
        np.testing.assert_array_equal(r["y"], x * 2 + 1)
    await batcher.close()


async def test_a_full_queue_answers_overloaded() -> None:
    batcher = _batcher(RecordingRuntime(delay=0.05), max_batch=1, max_queue_size=2)
    futures = [batcher.infer({"x": np.ones((1, 4), np.float32)}, 1) for _ in range(4)]
    results = await asyncio.gather(*futures, return_exceptions=True)
    assert any(isinstance(r, Overloaded) for r in results)
    assert any(isinstance(r, dict) for r in results)
    await batcher.close()


async def test_cheap_models_run_inline_and_expensive_ones_off_the_loop() -> None:
    cheap = RecordingRuntime()
    batcher = _batcher(cheap)
    for _ in range(5):
        await batcher.infer({"x": np.ones((1, 4), np.float32)}, 1)
    assert threading.current_thread().name in cheap.threads  # after the first measured run
    await batcher.close()
    slow = RecordingRuntime(delay=0.01)
    batcher = _batcher(slow)
    for _ in range(3):
        await batcher.infer({"x": np.ones((1, 4), np.float32)}, 1)
    assert threading.current_thread().name not in slow.threads
    await batcher.close()


async def test_a_cheap_model_with_a_run_timeout_stays_on_the_engine_thread() -> None:
    cheap = RecordingRuntime()
    batcher = Batcher(cheap, 8, DynamicBatching(), ModelStats("m", 1), run_timeout=1.0)
    for _ in range(5):
        await batcher.infer({"x": np.ones((1, 4), np.float32)}, 1)
    assert threading.current_thread().name not in cheap.threads
    await batcher.close()


async def test_the_engine_gets_the_next_batch_before_the_loop_answers_the_last() -> None:
    """Under a standing queue the engine thread must not wait while the loop encodes and sends answers."""
    runtime = RecordingRuntime(delay=0.02)
    batcher = _batcher(runtime)
    loop = asyncio.get_running_loop()
    queued_when_answered: list[int] = []
    answered: list[asyncio.Future[None]] = [loop.create_future() for _ in range(2)]

    def done(i: int) -> Callable[[object, object], None]:
        def record(outputs: object, error: object) -> None:
            assert error is None
            queued_when_answered.append(batcher.queued)
            answered[i].set_result(None)

        return record

    batcher.submit({"x": np.ones((1, 4), np.float32)}, 1, done(0))  # runs on the engine thread (not measured yet)
    await asyncio.sleep(0)  # the first flush hands it over
    batcher.submit({"x": np.ones((1, 4), np.float32)}, 1, done(1))  # waits while the engine is busy
    await asyncio.gather(*answered)
    # Two runs, and when the first request was answered the second had already left the queue for the engine.
    assert runtime.batches == [1, 1]
    assert queued_when_answered == [0, 0]
    await batcher.close()


async def test_stats_count_rows_batches_and_queue_time() -> None:
    stats = ModelStats("m", "1")
    batcher = Batcher(RecordingRuntime(delay=0.005), 8, DynamicBatching(), stats)  # type: ignore[arg-type]
    await asyncio.gather(*(batcher.infer({"x": np.ones((2, 4), np.float32)}, 2) for _ in range(10)))
    assert stats.inference_count == 20
    assert 1 <= stats.execution_count < 10
    assert stats.queue.count == 10
    assert sum(d.count for d in stats.batch_compute.values()) == stats.execution_count
    await batcher.close()


# ---- admission mechanism: departed callers, deadlines, shedding, every failure answered -----------


class _Caller:
    def __init__(self, deadline: float | None = None) -> None:
        self.deadline = deadline
        self.gone = False


async def test_a_caller_that_hung_up_is_dropped_before_the_engine_and_counted() -> None:
    runtime = RecordingRuntime(delay=0.03)
    batcher = _batcher(runtime, max_batch=1)
    callers = [_Caller() for _ in range(4)]
    futures = [
        asyncio.ensure_future(batcher.infer({"x": np.full((1, 4), i, np.float32)}, 1, c)) for i, c in enumerate(callers)
    ]
    await asyncio.sleep(0.01)  # the first runs; the others wait behind it
    callers[1].gone = callers[2].gone = True
    results = await asyncio.gather(*futures, return_exceptions=True)
    assert [type(r).__name__ for r in results] == ["dict", "ClientGone", "ClientGone", "dict"]
    assert runtime.batches == [1, 1], "rows nobody reads were never computed"
    assert batcher.dropped["disconnected"] == 2
    await batcher.close()


async def test_a_flush_that_finds_every_caller_gone_leaves_the_batcher_idle() -> None:
    # Regression: such a flush once left the batcher busy for good, and a server whose clients
    # had all hung up never finished shutting down.
    runtime = RecordingRuntime(delay=0.03)
    batcher = _batcher(runtime, max_batch=8)
    first = asyncio.ensure_future(batcher.infer({"x": np.ones((1, 4), np.float32)}, 1))
    await asyncio.sleep(0.005)
    callers = [_Caller() for _ in range(3)]
    gone = [asyncio.ensure_future(batcher.infer({"x": np.ones((1, 4), np.float32)}, 1, c)) for c in callers]
    for c in callers:
        c.gone = True
    await first
    assert all(isinstance(r, Exception) for r in await asyncio.gather(*gone, return_exceptions=True))
    await asyncio.wait_for(batcher.drain(), 1.0)
    again = await batcher.infer({"x": np.ones((1, 4), np.float32)}, 1)  # and it still serves
    np.testing.assert_array_equal(again["y"], np.full((1, 4), 3.0, np.float32))
    await asyncio.wait_for(batcher.close(), 2.0)


async def test_a_deadline_that_passes_in_the_queue_is_a_504_and_never_computed() -> None:
    runtime = RecordingRuntime(delay=0.05)
    batcher = _batcher(runtime, max_batch=1)
    loop = asyncio.get_running_loop()
    first = asyncio.ensure_future(batcher.infer({"x": np.ones((1, 4), np.float32)}, 1))
    await asyncio.sleep(0.005)
    late = batcher.infer({"x": np.ones((1, 4), np.float32)}, 1, _Caller(deadline=loop.time() + 0.01))
    with pytest.raises(DeadlineExceeded):
        await late
    await first
    assert runtime.batches == [1]
    assert batcher.dropped["deadline"] == 1
    await batcher.close()


async def test_a_queue_longer_than_the_deadline_is_refused_at_once_with_retry_after() -> None:
    runtime = RecordingRuntime(delay=0.02)
    batcher = _batcher(runtime, max_batch=1)
    for _ in range(3):  # measure the cost per row
        await batcher.infer({"x": np.ones((1, 4), np.float32)}, 1)
    queued = [asyncio.ensure_future(batcher.infer({"x": np.ones((1, 4), np.float32)}, 1)) for _ in range(10)]
    await asyncio.sleep(0)
    loop = asyncio.get_running_loop()
    start = time.perf_counter()
    with pytest.raises(Overloaded) as refused:
        await batcher.infer({"x": np.ones((1, 4), np.float32)}, 1, _Caller(deadline=loop.time() + 0.05))
    assert time.perf_counter() - start < 0.02, "refused at once, not after waiting"
    assert refused.value.retry_after == 1
    assert batcher.dropped["expected_wait"] == 1
    await asyncio.gather(*queued)
    await batcher.close()


async def test_a_standing_queue_is_shed_with_503_and_admitted_requests_wait_little() -> None:
    runtime = RecordingRuntime(delay=0.004)
    batcher = _batcher(runtime, max_batch=1, overload_wait_ms=5)
    waits: list[float] = []

    async def client() -> int:
        shed = 0
        end = time.perf_counter() + 1.5
        while time.perf_counter() < end:
            start = time.perf_counter()
            try:
                await batcher.infer({"x": np.ones((1, 4), np.float32)}, 1)
                waits.append(time.perf_counter() - start)
            except Overloaded as e:
                assert e.retry_after is not None
                shed += 1
                await asyncio.sleep(0.01)
        return shed

    shed = sum(await asyncio.gather(*(client() for _ in range(40))))
    assert shed > 0 and batcher.dropped["overload"] == shed
    # 40 callers on a 4 ms model is a 160 ms FIFO queue; shedding keeps it near a few targets.
    assert sorted(waits)[len(waits) // 2] < 0.1
    await batcher.close()


class _PerRow(RecordingRuntime):
    """An engine whose run takes ``delay`` per row (MiniLM on two cores: batching saves nothing)."""

    def run(self, inputs: Mapping[str, np.ndarray], output_names: Sequence[str] | None = None) -> dict[str, np.ndarray]:
        x = inputs["x"]
        self.batches.append(x.shape[0])
        time.sleep(self.delay * x.shape[0])
        return {"y": x * 2 + 1}


async def test_the_batch_that_finds_the_queue_overloaded_is_cut_to_the_target() -> None:
    runtime = _PerRow(delay=0.01)
    batcher = _batcher(runtime, max_batch=12, adaptive_batch_size=False)  # the defaults: 100 ms floor
    one = {"x": np.ones((1, 4), np.float32)}
    for _ in range(3):  # measure a one-row run and the cost per row (10 ms)
        await batcher.infer(one, 1)
        await asyncio.gather(batcher.infer(one, 1), batcher.infer(one, 1))
    runtime.batches.clear()
    # 60 requests at once: the first batch takes 12 rows (120 ms). At the next flush their
    # successors have waited over the target and 360 ms of work is still queued, more than an
    # interval (200 ms) can drain: overloaded at once, and this batch too is cut to the ~100 ms
    # the target allows instead of running 12 rows; what waited over twice the target is shed.
    results = await asyncio.gather(*(batcher.infer(one, 1) for _ in range(60)), return_exceptions=True)
    assert runtime.batches[0] == 12
    assert batcher.overloaded or batcher.dropped["overload"] > 0
    assert 1 <= runtime.batches[1] < 12
    shed = [r for r in results if isinstance(r, Overloaded)]
    assert shed and len(shed) == batcher.dropped["overload"]
    assert len(results) - len(shed) == sum(runtime.batches)  # every request answered once: ran or shed
    await batcher.close()


async def test_while_waits_are_above_the_target_batches_are_cut_to_it_before_any_verdict() -> None:
    runtime = _PerRow(delay=0.01)
    batcher = _batcher(runtime, max_batch=32, adaptive_batch_size=False)  # target 100 ms
    one = {"x": np.ones((1, 4), np.float32)}
    for _ in range(3):  # measure a one-row run and the cost per row (10 ms)
        await batcher.infer(one, 1)
        await asyncio.gather(batcher.infer(one, 1), batcher.infer(one, 1))
    runtime.batches.clear()
    calls = [asyncio.ensure_future(batcher.infer(one, 1)) for _ in range(15)]  # 150 ms of work
    await asyncio.sleep(0.02)
    # These wait for the first batch (over the target), and their flush takes all that is queued:
    # no backlog, but their waits put the queue above the target.
    calls += [asyncio.ensure_future(batcher.infer(one, 1)) for _ in range(15)]
    await asyncio.sleep(0.18)
    calls += [asyncio.ensure_future(batcher.infer(one, 1)) for _ in range(15)]  # during the second batch
    results = await asyncio.gather(*calls, return_exceptions=True)
    assert runtime.batches[:2] == [15, 15]
    assert runtime.batches[2] <= 10  # what the target allows, not the 15 queued
    assert all(not isinstance(r, Exception) or isinstance(r, Overloaded) for r in results)
    await batcher.close()


async def test_a_cheap_model_behind_a_starved_event_loop_is_never_shed() -> None:
    # The waits are long because the loop itself is held (as a CPU-starved server's is), not
    # because the engine has a queue: 32 rows of a cheap model are far less work than the target.
    runtime = RecordingRuntime(delay=0.0)
    batcher = _batcher(runtime, max_batch=8)  # the defaults: 100 ms floor, 200 ms interval
    one = {"x": np.ones((1, 4), np.float32)}
    for _ in range(3):  # measure the cost per row
        await asyncio.gather(*(batcher.infer(one, 1) for _ in range(4)))
    loop = asyncio.get_running_loop()
    end = time.perf_counter() + 1.2

    def hog() -> None:  # holds the loop 60 ms at a time, between the batcher's flushes
        time.sleep(0.06)
        if time.perf_counter() < end:
            loop.call_soon(hog)

    async def client() -> list[BaseException]:
        errors: list[BaseException] = []
        while time.perf_counter() < end:
            try:
                await batcher.infer(one, 1)
            except Overloaded as e:
                errors.append(e)
        return errors

    loop.call_soon(hog)
    errors = [e for errs in await asyncio.gather(*(client() for _ in range(32))) for e in errs]
    # 32 callers, 8 rows a flush, 60 ms held between flushes: each waits about 240 ms, over the
    # target for the whole second, and the queue never empties.
    assert not errors and batcher.dropped["overload"] == 0 and not batcher.overloaded
    await batcher.close()


async def test_a_lightly_loaded_model_is_never_shed() -> None:
    batcher = _batcher(RecordingRuntime(delay=0.002), max_batch=4)
    for _ in range(50):
        await asyncio.gather(*(batcher.infer({"x": np.ones((1, 4), np.float32)}, 1) for _ in range(2)))
    assert batcher.dropped == dict.fromkeys(batcher.dropped, 0)
    await batcher.close()


class _Broken(RecordingRuntime):
    def run(self, inputs: Mapping[str, np.ndarray], output_names: Sequence[str] | None = None) -> dict[str, np.ndarray]:
        raise RuntimeError("engine bug")


async def test_any_engine_exception_reaches_every_caller_with_the_traceback_logged(
    caplog: pytest.LogCaptureFixture,
) -> None:
    batcher = _batcher(_Broken(), max_batch=8)
    results = await asyncio.gather(
        *(batcher.infer({"x": np.ones((1, 4), np.float32)}, 1) for _ in range(5)), return_exceptions=True
    )
    assert all(isinstance(r, InferenceFailed) and "RuntimeError: engine bug" in str(r) for r in results)
    assert any(r.exc_info and "engine bug" in str(r.exc_info[1]) for r in caplog.records)
    await asyncio.wait_for(batcher.close(), 2.0)


async def test_an_exception_while_assembling_a_batch_reaches_its_callers(monkeypatch: pytest.MonkeyPatch) -> None:
    batcher = _batcher(RecordingRuntime(), max_batch=8)

    def explode(batch: list[QueuedRequest]) -> dict[str, np.ndarray]:
        raise MemoryError("no room for the batch")

    monkeypatch.setattr(batcher, "_concatenate", explode)
    with pytest.raises(InferenceFailed, match="MemoryError"):
        await batcher.infer({"x": np.ones((1, 4), np.float32)}, 1)
    await asyncio.wait_for(batcher.close(), 2.0)


# ---- a run that hangs (runtime.timeout_ms) ------------------------------------------------------


async def test_a_run_that_never_returns_fails_its_callers_and_leaves_the_version_unavailable() -> None:
    reasons: list[str] = []
    batcher = Batcher(
        RecordingRuntime(delay=2.5),  # ignores any cancellation, as a hung custom operator would
        1,
        DynamicBatching(),
        ModelStats("m", 1),
        run_timeout=0.1,
        on_stuck=reasons.append,
    )
    start = time.perf_counter()
    first = asyncio.ensure_future(batcher.infer({"x": np.ones((1, 4), np.float32)}, 1))
    await asyncio.sleep(0.05)
    queued = asyncio.ensure_future(batcher.infer({"x": np.ones((1, 4), np.float32)}, 1))
    with pytest.raises(DeadlineExceeded, match="did not finish"):
        await first
    assert time.perf_counter() - start < 2.0, "answered by the watchdog, not when the engine came back"
    with pytest.raises(ModelNotReady, match="unavailable"):
        await queued
    with pytest.raises(ModelNotReady, match="did not return from a run"):
        await batcher.infer({"x": np.ones((1, 4), np.float32)}, 1)
    assert len(reasons) == 1 and "runtime.timeout_ms 100" in reasons[0]
    await asyncio.wait_for(batcher.close(), 1.0)  # the stuck thread is not waited for


async def test_a_burst_on_a_starved_event_loop_is_not_shed() -> None:
    """A tiny model, a loop that gets a sixth of the CPU (another task hogs it), and 256 requests at once:
    their waits are long, but the queue drains within an interval: a burst, not a standing queue."""
    batcher = _batcher(RecordingRuntime(), max_batch=32)  # the defaults: shedding on, 100 ms floor
    loop = asyncio.get_running_loop()
    hogging = True

    def hog() -> None:
        time.sleep(0.025)  # the event loop's thread loses the CPU
        if hogging:
            loop.call_later(0.005, hog)

    loop.call_soon(hog)
    results = await asyncio.gather(
        *(batcher.infer({"x": np.ones((1, 4), np.float32)}, 1) for _ in range(256)), return_exceptions=True
    )
    hogging = False
    assert not [r for r in results if isinstance(r, Exception)]
    assert batcher.dropped["overload"] == 0
    await batcher.close()
