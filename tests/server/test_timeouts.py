"""Slow and idle clients: the pure policy, and the sweeper with stand-in connections."""

from __future__ import annotations

from leanserve.protocol import Limits
from leanserve.server.timeouts import Phase, Progress, TimeoutSweeper, made_progress, overdue

LIMITS = Limits(header_timeout_s=10, body_timeout_s=30, idle_timeout_s=75)


def test_each_phase_has_its_own_limit_and_the_server_s_own_time_never_counts() -> None:
    assert not overdue(Phase.HEAD, 0.0, 9.9, LIMITS)
    assert overdue(Phase.HEAD, 0.0, 10.0, LIMITS)
    assert not overdue(Phase.BODY, 0.0, 29.0, LIMITS)
    assert overdue(Phase.BODY, 0.0, 30.0, LIMITS)
    assert overdue(Phase.IDLE, 0.0, 75.0, LIMITS)
    assert not overdue(Phase.BUSY, 0.0, 1e9, LIMITS)


def test_bytes_trickled_into_a_head_do_not_reset_its_clock_but_a_body_s_do() -> None:
    head = Progress(Phase.HEAD, 1, 100)
    assert not made_progress(head, Progress(Phase.HEAD, 1, 101))  # slowloris: a byte at a time
    assert made_progress(head, Progress(Phase.HEAD, 2, 101))  # a new request
    body = Progress(Phase.BODY, 1, 100)
    assert made_progress(body, Progress(Phase.BODY, 1, 101))
    assert not made_progress(body, Progress(Phase.BODY, 1, 100))
    assert made_progress(body, Progress(Phase.BUSY, 1, 100))


class _Connection:
    def __init__(self, phase: Phase) -> None:
        self.state = Progress(phase, 1, 0)
        self.timed_out: list[Phase] = []

    def progress(self) -> Progress:
        return self.state

    def time_out(self, phase: Phase) -> None:
        self.timed_out.append(phase)


def test_the_sweeper_cuts_off_only_connections_overdue_since_it_first_saw_them() -> None:
    slow_head, busy, body = _Connection(Phase.HEAD), _Connection(Phase.BUSY), _Connection(Phase.BODY)
    connections: set[_Connection] = {slow_head, busy, body}
    sweeper = TimeoutSweeper(connections, LIMITS)  # type: ignore[arg-type]
    for second in range(0, 40):
        body.state = Progress(Phase.BODY, 1, second)  # a byte a second: a slow body, not a stalled one
        for cut in sweeper.sweep(float(second)):
            connections.discard(cut)  # type: ignore[arg-type]
    assert slow_head.timed_out == [Phase.HEAD] and slow_head not in connections
    assert busy.timed_out == [] and body.timed_out == []
