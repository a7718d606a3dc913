"""The event loop polls for a while after an answer, then sleeps: on a real server, by the CPU its thread takes."""

from __future__ import annotations

import asyncio
import http.client
import json
import time
from pathlib import Path

import pytest

from leanserve.server import Server
from leanserve.server.idle_poll import IDLE_POLL_SECONDS, MISSES_TO_STOP, PROBE_EVERY, IdlePoll, idle_poll_seconds_for
from tests.server.conftest import RunningServer

BODY = json.dumps({"inputs": [{"name": "x", "datatype": "FP32", "shape": [1, 4], "data": [1, 2, 3, 4]}]})


def test_the_default_polls_only_with_cores_to_itself() -> None:
    assert idle_poll_seconds_for(None, cpus=2, shares_cores=False) == IDLE_POLL_SECONDS
    assert idle_poll_seconds_for(None, cpus=1, shares_cores=False) == 0.0  # the client's or the engine's core
    assert idle_poll_seconds_for(None, cpus=16, shares_cores=True) == 0.0  # sibling workers
    assert idle_poll_seconds_for(0.001, cpus=1, shares_cores=True) == 0.001  # asked for: as asked
    assert idle_poll_seconds_for(0.0, cpus=16, shares_cores=False) == 0.0
    with pytest.raises(ValueError, match="0 seconds"):
        idle_poll_seconds_for(-1e-6, cpus=2, shares_cores=False)


def test_a_server_refuses_a_negative_poll_when_built(repository: Path) -> None:
    with pytest.raises(ValueError, match="0 seconds"):
        Server(repository, port=0, idle_poll_seconds=-1e-6)
    assert Server(repository, port=0, idle_poll_seconds=0.0).idle_poll_seconds == 0.0
    assert Server(repository, port=0, reuse_port=True).idle_poll_seconds == 0.0  # sibling workers share cores


def test_polls_until_the_deadline_after_the_last_kick(monkeypatch: pytest.MonkeyPatch) -> None:
    polls = 0
    poll = IdlePoll.__dict__["_poll"]

    def counted(self: IdlePoll) -> None:
        nonlocal polls
        polls += 1
        poll(self)

    monkeypatch.setattr(IdlePoll, "_poll", counted)

    async def scenario() -> None:
        poller = IdlePoll(asyncio.get_running_loop(), 0.1)
        poller.kick()
        await asyncio.sleep(0.06)
        assert poller.active and polls > 20  # the loop turned over and over instead of sleeping 60 ms
        poller.kick()  # a later answer: the deadline moves on from here
        await asyncio.sleep(0.07)
        assert poller.active  # 130 ms after the first kick, 70 ms after the second
        await asyncio.sleep(0.1)
        assert not poller.active
        stopped_at = polls
        await asyncio.sleep(0.05)
        assert polls == stopped_at  # asleep: no more polls without a kick

    asyncio.run(scenario())


def test_polling_stops_when_it_catches_nothing_and_a_probe_starts_it_again() -> None:
    """Requests far apart (open-loop load): polls that catch none stop it; every PROBE_EVERY-th answer polls
    anyway, and a poll that catches a request starts it again."""

    async def run_out(poller: IdlePoll) -> None:
        while poller.active:
            await asyncio.sleep(0.001)

    async def scenario() -> None:
        poller = IdlePoll(asyncio.get_running_loop(), 0.002)
        for _ in range(MISSES_TO_STOP):
            assert poller.polling
            poller.kick()
            assert poller.active
            await run_out(poller)  # no other answer came: a miss
        assert not poller.polling
        for _ in range(PROBE_EVERY - 1):
            poller.kick()
            assert not poller.active  # the loop sleeps at once after these answers
        poller.kick()  # the probe
        assert poller.active
        await asyncio.sleep(0)
        poller.caught = True  # a request arrived while it polled (the front end says so)
        await run_out(poller)
        assert poller.polling  # polling again after every answer
        poller.kick()
        assert poller.active

    asyncio.run(scenario())


def _server_cpu_seconds(server: RunningServer) -> float:
    ident = server._thread.ident
    assert ident is not None
    return time.clock_gettime(time.pthread_getcpuclockid(ident))


def _infer(server: RunningServer) -> None:
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=10)
    conn.request("POST", "/v2/models/mlp/infer", BODY, {"Content-Type": "application/json"})
    response = conn.getresponse()
    assert response.status == 200, response.read()
    response.read()
    conn.close()


@pytest.mark.parametrize("seconds", [0.4, 0.0])
def test_a_server_polls_after_an_answer_then_sleeps(repository: Path, seconds: float) -> None:
    """With polling, the server's thread keeps a core busy after an answer, and only for that long."""
    running = RunningServer(repository, idle_poll_seconds=seconds).start()
    try:
        _infer(running)
        _infer(running)  # the model's first run is behind it: the answer comes at once
        start = _server_cpu_seconds(running)
        time.sleep(0.2)
        polling = _server_cpu_seconds(running) - start
        time.sleep(0.4)  # past the deadline
        start = _server_cpu_seconds(running)
        time.sleep(0.2)
        asleep = _server_cpu_seconds(running) - start
    finally:
        running.stop()
    assert asleep < 0.02
    if seconds:
        assert polling > 0.05  # a polling loop takes all the CPU it is given; 0.2 s of it here at most
    else:
        assert polling < 0.02
