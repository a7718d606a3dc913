"""The shadow queue: copies run only in event-loop turns that found nothing else to do."""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field

import pytest

from leanserve.experiments.shadow import ShadowQueue


@dataclass
class Job:
    log: list[str]
    name: str
    queued_at: float = field(default_factory=time.perf_counter)
    is_ready: bool = True
    asked: int = 0

    def ready(self) -> bool:
        self.asked += 1
        return self.is_ready

    def run(self) -> None:
        self.log.append(f"run {self.name}")

    def shed(self) -> None:
        self.log.append(f"shed {self.name}")


def busy_turns(seconds_per_turn: float, turns: int, log: list[str]) -> asyncio.Future[None]:
    """Control work: a callback in each of ``turns`` loop turns, each busy for ``seconds_per_turn``."""
    loop = asyncio.get_running_loop()
    finished: asyncio.Future[None] = loop.create_future()
    left = [turns]

    def work() -> None:
        end = time.perf_counter() + seconds_per_turn
        while time.perf_counter() < end:
            pass
        log.append("control")
        left[0] -= 1
        if left[0]:
            loop.call_soon(work)
        else:
            finished.set_result(None)

    loop.call_soon(work)
    return finished


async def settle(queue: ShadowQueue, seconds: float = 2.0) -> None:
    end = time.monotonic() + seconds
    while len(queue) and time.monotonic() < end:
        await asyncio.sleep(0.01)  # seldom: a turn that wakes this coroutine is a busy one to the probe


async def test_at_idle_every_copy_runs_in_order() -> None:
    queue, log = ShadowQueue(), []
    for i in range(5):
        queue.submit(Job(log, str(i)))
    await settle(queue)
    assert log == [f"run {i}" for i in range(5)]


async def test_an_idle_turn_runs_a_burst_of_copies_and_then_lets_their_work_run() -> None:
    loop = asyncio.get_running_loop()
    queue, log = ShadowQueue(burst=2), []

    class Copy(Job):
        def run(self) -> None:
            super().run()
            loop.call_soon(log.append, f"work {self.name}")  # the copy's batch, in the next turn

    for i in range(5):
        queue.submit(Copy(log, str(i)))
    await settle(queue)
    # Two copies per idle turn, together; their work ran before the queue judged another turn.
    assert log == ["run 0", "run 1", "work 0", "work 1", "run 2", "run 3", "work 2", "work 3", "run 4", "work 4"]


async def test_no_copy_runs_while_every_turn_serves_control_work() -> None:
    queue, log = ShadowQueue(), []
    control = busy_turns(0.0002, 200, log)  # 200 turns, each 200 us of work
    for i in range(3):
        queue.submit(Job(log, str(i)))
    await control
    assert log == ["control"] * 200  # 40 ms of control work went first, every turn of it
    await settle(queue)
    assert log[200:] == ["run 0", "run 1", "run 2"]  # then the first idle turns ran the copies


async def test_copies_that_find_no_idle_turn_in_time_are_shed() -> None:
    queue, log = ShadowQueue(max_wait_s=0.01), []
    control = busy_turns(0.0002, 150, log)  # 30 ms busy, three times the wait allowed
    queue.submit(Job(log, "a"))
    queue.submit(Job(log, "b"))
    await control
    await settle(queue)
    assert [e for e in log if e != "control"] == ["shed a", "shed b"] and len(queue) == 0


async def test_a_copy_whose_control_is_busy_waits_without_spinning_the_loop() -> None:
    queue, log = ShadowQueue(), []
    job = Job(log, "a", is_ready=False)
    queue.submit(job)
    await asyncio.sleep(0.02)  # 20 ms with the control busy
    assert log == [] and len(queue) == 1
    assert 1 <= job.asked <= 60  # looked again every 2 ms or more (spinning would ask thousands of times)
    job.is_ready = True
    await settle(queue)
    assert log == ["run a"]


async def test_a_copy_whose_control_is_idle_goes_ahead_of_one_whose_control_is_busy() -> None:
    queue, log = ShadowQueue(), []
    busy = Job(log, "busy", is_ready=False)  # another experiment's control is running
    queue.submit(busy)
    queue.submit(Job(log, "idle"))
    await settle(queue, 0.5)
    assert log == ["run idle"] and len(queue) == 1
    busy.is_ready = True
    await settle(queue)
    assert log == ["run idle", "run busy"]


async def test_drop_sheds_what_is_queued() -> None:
    queue, log = ShadowQueue(), []
    queue.submit(Job(log, "a", is_ready=False))
    queue.submit(Job(log, "b"))
    queue.drop()
    await asyncio.sleep(0.01)
    assert log == ["shed a", "shed b"] and len(queue) == 0


def test_a_queue_used_from_a_new_event_loop_runs_there() -> None:
    """The router outlives an event loop in tests and embedded uses: a probe left on a closed loop must not
    leave the queue believing it is armed."""
    queue, log = ShadowQueue(), []

    async def submit_and_leave() -> None:
        queue.submit(Job(log, "left", is_ready=False))  # its probe is scheduled; the loop then ends

    async def submit_and_settle() -> None:
        queue.submit(Job(log, "next"))
        await settle(queue, 0.5)

    asyncio.run(submit_and_leave())
    asyncio.run(submit_and_settle())
    assert "run next" in log


def test_on_uvloop_too_copies_wait_for_the_control_work_and_then_run() -> None:
    """The server runs on uvloop: its turns poll the sockets between call_soon callbacks, as asyncio's do."""
    uvloop = pytest.importorskip("uvloop")
    uvloop.run(test_no_copy_runs_while_every_turn_serves_control_work())
    uvloop.run(test_at_idle_every_copy_runs_in_order())
