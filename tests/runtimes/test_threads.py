"""The threads policy: light models get one thread, heavy ones the cores, spinning only with a core to spare."""

from __future__ import annotations

import pytest

from leanserve.runtimes.threads import LIGHT_SECONDS, ThreadPlan, available_cores, plan_threads


def test_a_light_model_gets_one_thread_and_no_spinning() -> None:
    for cores in (1, 2, 16):
        plan = plan_threads(LIGHT_SECONDS / 20, cores)
        assert (plan.threads, plan.spinning) == (1, False)
        assert "light" in plan.reason


@pytest.mark.parametrize(
    ("cores", "threads", "spinning"),
    [(1, 1, False), (2, 2, False), (3, 2, True), (4, 3, True), (16, 15, True)],
)
def test_a_heavy_model_gets_the_cores_and_leaves_one_to_the_event_loop_where_there_are_more_than_two(
    cores: int, threads: int, spinning: bool
) -> None:
    plan = plan_threads(LIGHT_SECONDS * 20, cores)
    assert (plan.threads, plan.spinning) == (threads, spinning)
    assert f"{threads} of {cores} cores" in plan.reason


def test_before_measuring_the_guess_is_the_heavy_plan() -> None:
    assert plan_threads(None, 2) == ThreadPlan(2, False, "not measured yet: 2 of 2 cores")


def test_the_users_settings_are_kept() -> None:
    assert (plan_threads(LIGHT_SECONDS / 20, 2, threads=2).threads, plan_threads(0.5, 8, threads=1).threads) == (2, 1)
    assert plan_threads(LIGHT_SECONDS * 20, 2, spinning=True).spinning is True
    assert plan_threads(LIGHT_SECONDS / 20, 16, threads=4, spinning=False) == ThreadPlan(4, False, "set in model.toml")
    # Spinning left out follows the threads, given or chosen.
    assert plan_threads(None, 16, threads=4).spinning is True
    assert plan_threads(None, 2, threads=2).spinning is False


def test_available_cores_is_positive() -> None:
    assert available_cores() >= 1
