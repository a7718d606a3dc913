"""The step mechanism alone, on an event loop: deadlines while queued and while running, culprits, hung calls."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Sequence

import numpy as np

from leanserve.errors import DeadlineExceeded, InferenceFailed, InvalidInput, LeanserveError
from leanserve.processing.stages import Item, Stage, Tensors, choose


def _item(name: str, deadline: float, results: dict[str, object], rows: int = 1) -> Item:
    def done(tensors: Tensors | None, error: LeanserveError | None) -> None:
        results[name] = error if error is not None else tensors

    return Item(name, {"x": np.array([name])}, {"x": np.array([name])}, rows, deadline, done)


def _stage(run: object, forward: object = None, max_rows: int = 8) -> Stage:
    return Stage(
        "m",
        "preprocess",
        run,  # type: ignore[arg-type]
        lambda item: tuple(sorted(item.tensors)),
        max_rows,
        forward or (lambda item, tensors: item.done(tensors, None)),  # type: ignore[arg-type]
        lambda batch, seconds: None,
    )


def test_choose_takes_the_oldest_then_compatible_requests_that_fit() -> None:
    items = [_item(n, 0.0, {}, rows) for n, rows in (("a", 2), ("b", 5), ("c", 1), ("d", 1))]
    assert choose(items, lambda i: (), 4) == [0, 2, 3]
    assert choose(items, lambda i: (i.request_id == "a",), 8) == [0]
    assert choose(items, lambda i: (), 0) == [0]


async def test_a_request_whose_deadline_passes_while_queued_is_dropped_unrun() -> None:
    loop = asyncio.get_running_loop()
    gate = threading.Event()
    ran: list[list[str]] = []

    def run(batch: list[Item]) -> Sequence[Tensors]:
        ran.append([i.request_id for i in batch])
        gate.wait(5)
        return [i.tensors for i in batch]

    results: dict[str, object] = {}
    stage = _stage(run)
    stage.put(_item("first", loop.time() + 10, results))
    await asyncio.sleep(0.05)  # "first" runs, holding the step
    stage.put(_item("expires", loop.time() + 0.05, results))
    stage.put(_item("waits", loop.time() + 10, results))
    await asyncio.sleep(0.15)
    gate.set()
    for _ in range(100):
        if len(results) == 3:
            break
        await asyncio.sleep(0.02)
    assert isinstance(results["expires"], DeadlineExceeded) and "waiting for" in str(results["expires"])
    assert ran == [["first"], ["waits"]]  # never run
    stage.close()


async def test_a_failing_batch_is_rerun_alone_so_only_the_culprit_fails() -> None:
    loop = asyncio.get_running_loop()
    calls: list[int] = []

    def run(batch: list[Item]) -> Sequence[Tensors]:
        calls.append(len(batch))
        for i in batch:
            if i.request_id == "bad":
                raise InvalidInput("bad input")
            if i.request_id == "bug":
                raise ZeroDivisionError("oops")
        return [i.tensors for i in batch]

    results: dict[str, object] = {}
    stage = _stage(run)
    for name in ("ok1", "bad", "bug", "ok2"):
        stage.put(_item(name, loop.time() + 10, results))
    for _ in range(100):
        if len(results) == 4:
            break
        await asyncio.sleep(0.02)
    assert isinstance(results["bad"], InvalidInput) and results["bad"].status == 400
    assert isinstance(results["bug"], InferenceFailed) and "ZeroDivisionError: oops" in str(results["bug"])
    assert isinstance(results["ok1"], dict) and isinstance(results["ok2"], dict)
    assert calls == [4, 1, 1, 1, 1]
    stage.close()


async def test_a_hung_call_is_left_behind_and_a_fresh_thread_serves_the_step() -> None:
    loop = asyncio.get_running_loop()
    release = threading.Event()

    def run(batch: list[Item]) -> Sequence[Tensors]:
        if batch[0].request_id == "hangs":
            release.wait(10)
        return [i.tensors for i in batch]

    results: dict[str, object] = {}
    stage = _stage(run)
    stage.put(_item("hangs", loop.time() + 0.1, results))
    for _ in range(250):
        if "hangs" in results:
            break
        await asyncio.sleep(0.02)
    assert isinstance(results["hangs"], DeadlineExceeded) and stage.abandoned == 1
    stage.put(_item("next", loop.time() + 5, results))
    for _ in range(100):
        if "next" in results:
            break
        await asyncio.sleep(0.02)
    assert isinstance(results["next"], dict)
    release.set()  # the old thread's late result is dropped
    await asyncio.sleep(0.05)
    assert isinstance(results["hangs"], DeadlineExceeded)
    stage.close()
