"""The threads policy: light models get one thread, heavy ones the cores; workers spin without end only with a
core to spare, and briefly where none is."""

from __future__ import annotations

import pytest

from leanserve.runtimes.threads import (
    LIGHT_SECONDS,
    SHORT_SPIN_MICROSECONDS,
    ThreadPlan,
    available_cores,
    plan_threads,
)


def test_a_light_model_gets_one_thread_and_no_spinning() -> None:
    for cores in (1, 2, 16):
        plan = plan_threads(LIGHT_SECONDS / 20, cores)
        assert (plan.threads, plan.spinning) == (1, False)
        assert "light" in plan.reason


@pytest.mark.parametrize(
    ("cores", "threads", "spin"),
    [(1, 1, False), (2, 2, SHORT_SPIN_MICROSECONDS), (3, 2, None), (4, 3, None), (16, 15, None)],
)
def test_a_heavy_model_gets_the_cores_and_leaves_one_to_the_event_loop_where_there_are_more_than_two(
    cores: int, threads: int, spin: int | bool | None
) -> None:
    plan = plan_threads(LIGHT_SECONDS * 20, cores)
    assert plan.threads == threads
    assert f"{threads} of {cores} cores" in plan.reason
    if spin is False:  # one thread: no worker to spin
        assert (plan.spinning, plan.spin_microseconds) == (False, None)
    else:  # ONNX Runtime's own spin with a core to spare, a short one without
        assert (plan.spinning, plan.spin_microseconds) == (True, spin)


def test_without_a_core_to_spare_idle_workers_spin_briefly_then_sleep() -> None:
    # Long enough to catch a run's next parallel section, far shorter than the time between two
    # requests (the event loop answers, the client sends, the loop decodes: a millisecond or more).
    assert 10 <= SHORT_SPIN_MICROSECONDS <= 200
    spin = SHORT_SPIN_MICROSECONDS
    reason = f"a one-row run takes 20.0 ms: 2 of 2 cores; no core to spare: idle workers spin {spin} us, then sleep"
    assert plan_threads(0.02, 2) == ThreadPlan(2, True, reason, spin)


def test_before_measuring_the_guess_is_the_heavy_plan() -> None:
    spin = SHORT_SPIN_MICROSECONDS
    reason = f"not measured yet: 2 of 2 cores; no core to spare: idle workers spin {spin} us, then sleep"
    assert plan_threads(None, 2) == ThreadPlan(2, True, reason, spin)


def test_the_users_settings_are_kept() -> None:
    assert (plan_threads(LIGHT_SECONDS / 20, 2, threads=2).threads, plan_threads(0.5, 8, threads=1).threads) == (2, 1)
    # allow_spinning = true is ONNX Runtime's own spin, even where no core is left over.
    given = plan_threads(LIGHT_SECONDS * 20, 2, spinning=True)
    assert given == ThreadPlan(2, True, "a one-row run takes 20.0 ms: 2 of 2 cores")
    assert plan_threads(LIGHT_SECONDS / 20, 16, threads=4, spinning=False) == ThreadPlan(4, False, "set in model.toml")
    assert plan_threads(None, 2, threads=2, spinning=False).spin_microseconds is None
    # Spinning left out follows the threads, given or chosen.
    assert plan_threads(None, 16, threads=4) == ThreadPlan(4, True, "set in model.toml")
    assert plan_threads(None, 2, threads=2).spin_microseconds == SHORT_SPIN_MICROSECONDS
    assert plan_threads(None, 2, threads=1) == ThreadPlan(1, False, "set in model.toml")


def test_available_cores_is_positive() -> None:
    assert available_cores() >= 1
