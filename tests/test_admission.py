"""Admission policy without sockets: deadlines, the expected wait, and the controlled delay."""

from __future__ import annotations

import pytest

from leanserve.admission import (
    ControlledDelay,
    admit,
    over_target,
    overload_rows,
    parse_timeout_us,
    retry_after_seconds,
    timeout_deadline,
)
from leanserve.errors import DeadlineExceeded, InvalidInput, Overloaded


def test_the_timeout_parameter_is_microseconds_and_zero_means_none() -> None:
    assert timeout_deadline({}, 10.0) is None
    assert timeout_deadline({"timeout": 0}, 10.0) is None
    assert timeout_deadline({"timeout": 250_000}, 10.0) == pytest.approx(10.25)
    for bad in (-1, 1.5, "100", True, None, [1]):
        with pytest.raises(InvalidInput, match="microseconds"):
            parse_timeout_us(bad)


def test_admit_takes_requests_without_deadline_or_with_room_to_spare() -> None:
    assert admit(0.0, None, 10_000, 1.0) is None  # no deadline: the queue's own policies judge it
    assert admit(0.0, 1.0, 0, 1.0) is None  # empty queue
    assert admit(0.0, 1.0, 5, None) is None  # nothing measured yet
    assert admit(0.0, 1.0, 9, 0.1) is None  # 0.9 s expected, 1 s allowed


def test_admit_refuses_at_once_when_the_queue_is_longer_than_the_deadline() -> None:
    refused = admit(0.0, 1.0, 30, 0.1)
    assert isinstance(refused, Overloaded)
    assert refused.status == 503
    assert refused.retry_after == 3  # the expected wait, rounded up
    assert "3000 ms" in str(refused)
    late = admit(2.0, 1.0, 0, None)
    assert isinstance(late, DeadlineExceeded) and late.status == 504


def test_while_overloaded_a_new_request_expected_to_wait_over_the_target_is_refused() -> None:
    assert over_target(10, None, 0.1) is None  # nothing measured
    assert over_target(9, 0.01, 0.1) is None
    refused = over_target(50, 0.01, 0.1)
    assert isinstance(refused, Overloaded) and refused.retry_after == 1
    # What is left of the batch running is waited for too.
    assert over_target(5, 0.01, 0.1, running_seconds=0.04) is None
    assert isinstance(over_target(5, 0.01, 0.1, running_seconds=0.08), Overloaded)


def test_retry_after_is_whole_seconds_and_at_least_one() -> None:
    assert retry_after_seconds(0.001) == 1
    assert retry_after_seconds(2.1) == 3
    assert retry_after_seconds(float("inf")) == 1


def _feed(
    codel: ControlledDelay, waits: list[float], step: float, cycle: float = 0.0, start: float = 0.0
) -> list[float | None]:
    return [codel.observe(start + i * step, w, cycle) for i, w in enumerate(waits)]


def test_a_burst_that_drains_within_an_interval_is_never_shed() -> None:
    codel = ControlledDelay(0.005)
    # Waits far above the target, but one flush in the interval found a short wait: no standing queue.
    verdicts = _feed(codel, [0.5, 0.4, 0.3, 0.001, 0.5, 0.5], step=0.03)
    assert verdicts == [None] * 6
    assert not codel.overloaded


def test_a_standing_queue_is_shed_above_twice_the_target_until_an_interval_needs_no_shedding() -> None:
    codel = ControlledDelay(0.005)
    verdicts = _feed(codel, [0.2] * 20, step=0.02)
    assert verdicts[0] is None  # the first interval is still open
    assert verdicts[-1] == pytest.approx(0.01)
    assert codel.overloaded
    codel.idle()  # the queue emptied: a new interval, but still overloaded until a verdict says not
    assert codel.overloaded
    # Short waits, but shedding had to refuse requests to keep them short: still overloaded.
    for i in range(12):
        codel.refused()
        codel.observe(1.0 + i * 0.02, 0.001, 0.0)
    assert codel.overloaded
    # A whole interval with short waits and nothing refused: the overload is over.
    assert _feed(codel, [0.001] * 12, step=0.02, start=2.0)[-1] is None
    assert not codel.overloaded


def test_the_target_grows_with_the_model_s_run_time_so_a_slow_model_is_not_shed() -> None:
    # One request takes 80 ms: a request that waited for the run in progress and then its own
    # waited for the engine, not for a standing queue.
    codel = ControlledDelay(0.005)
    verdicts = _feed(codel, [0.15] * 40, step=0.08, cycle=0.08)
    assert verdicts == [None] * 40
    assert codel.target == pytest.approx(0.16)
    # Four runs' wait, over an interval of four targets: standing; shed over two targets.
    verdicts = _feed(codel, [0.32] * 40, step=0.08, cycle=0.08, start=10.0)
    assert verdicts[-1] == pytest.approx(0.32)


def test_while_overloaded_a_batch_takes_no_longer_than_the_target() -> None:
    assert overload_rows(32, 0.1, None) == 32  # nothing measured
    assert overload_rows(32, 0.1, 0.02) == 5
    assert overload_rows(32, 0.1, 0.5) == 1  # at least one row
    assert overload_rows(4, 0.1, 0.001) == 4  # never above the tuner's limit


def test_the_floor_is_the_least_target() -> None:
    codel = ControlledDelay(0.1)
    assert _feed(codel, [0.09] * 30, step=0.05) == [None] * 30
    assert _feed(codel, [0.3] * 30, step=0.05, start=10.0)[-1] == pytest.approx(0.2)


def test_a_standing_queue_is_judged_an_interval_after_its_wait_first_went_above_the_target() -> None:
    codel = ControlledDelay(0.1)  # target 100 ms, interval 200 ms
    assert codel.observe(0.0, 0.05, 0.0) is None
    assert not codel.above
    assert codel.observe(0.15, 0.15, 0.0) is None  # above from here: batches are capped meanwhile
    assert codel.above
    assert codel.observe(0.30, 0.25, 0.0) is None  # 150 ms above: not yet an interval
    assert codel.observe(0.36, 0.30, 0.0) == pytest.approx(0.2)  # 210 ms above: standing
    assert codel.overloaded and not codel.above


def test_a_queue_that_empties_is_no_longer_above_the_target() -> None:
    codel = ControlledDelay(0.1)
    assert codel.observe(0.0, 0.15, 0.0) is None and codel.above
    codel.idle()
    assert not codel.above
    assert codel.observe(0.15, 0.15, 0.0) is None  # a new wait above: the interval starts again
    assert codel.observe(0.30, 0.15, 0.0) is None


def test_a_queue_that_cannot_drain_within_an_interval_is_an_overload_at_once() -> None:
    codel = ControlledDelay(0.1)
    # Its wait above the target and 500 ms of engine time still queued: no burst drains that within 200 ms.
    assert codel.observe(0.0, 0.15, 0.0, backlog_seconds=0.5) == pytest.approx(0.2)
    # A burst with long waits whose rest drains within the interval is left to drain.
    codel = ControlledDelay(0.1)
    assert codel.observe(0.0, 0.15, 0.0, backlog_seconds=0.15) is None
    # And a long backlog behind short waits is not a standing queue yet.
    assert codel.observe(0.01, 0.05, 0.0, backlog_seconds=5.0) is None
    assert not codel.overloaded


def _overload_then_leave(codel: ControlledDelay) -> float:
    """Into the overloaded state and out again; the time it ended."""
    assert _feed(codel, [0.3] * 6, step=0.05)[-1] is not None
    verdicts = _feed(codel, [0.01] * 12, step=0.05, start=1.0)
    assert verdicts[-1] is None and not codel.overloaded
    return 1.0 + 11 * 0.05


def test_a_standing_queue_soon_after_an_overload_is_shed_at_once() -> None:
    codel = ControlledDelay(0.1)
    left = _overload_then_leave(codel)
    # Within 16 intervals of the last overload, one flush above the target is enough.
    assert codel.observe(left + 1.0, 0.15, 0.0) == pytest.approx(0.2)


def test_long_after_an_overload_a_queue_must_stand_a_whole_interval_again() -> None:
    codel = ControlledDelay(0.1)
    left = _overload_then_leave(codel)
    later = left + 16 * 0.2 + 1.0
    assert codel.observe(later, 0.15, 0.0) is None
    assert codel.observe(later + 0.21, 0.15, 0.0) == pytest.approx(0.2)


def test_long_waits_in_front_of_little_engine_work_are_no_overload() -> None:
    # A tiny model on a starved event loop: waits of 300 ms, but the queue holds 0.2 ms of engine
    # work; refusing requests would not shorten those waits.
    codel = ControlledDelay(0.1)
    for i in range(10):
        assert codel.observe(i * 0.1, 0.3, 0.00001, backlog_seconds=0.0001, work_seconds=0.0002) is None
    assert not codel.overloaded and not codel.above
    # Even within the memory of an earlier overload, where one flush above the target would do.
    left = _overload_then_leave(codel)
    assert codel.observe(left + 0.5, 0.3, 0.00001, work_seconds=0.0002) is None
    # The same waits with the engine's work over the target are a standing queue, as before.
    assert codel.observe(left + 0.6, 0.3, 0.00001, work_seconds=0.15) == pytest.approx(0.2)
