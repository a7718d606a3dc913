"""Hostile input on the fast front end: every limit a 4xx with a JSON error, slow clients cut off."""

from __future__ import annotations

import inspect
import json
import socket
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from leanserve.protocol import Limits
from leanserve.server import Server, serve

from .conftest import RunningServer

LIMITS = Limits(
    max_body_bytes=1 << 20,
    max_url_bytes=1024,
    max_header_bytes=4096,
    header_timeout_s=1,
    body_timeout_s=1,
    idle_timeout_s=2,
)
X = {"name": "x", "datatype": "FP32", "shape": [1, 4], "data": [1, 2, 3, 4]}


@pytest.fixture(scope="module")
def limited(repository: Path) -> Iterator[RunningServer]:
    running = RunningServer(repository, LIMITS).start()
    yield running
    running.stop()


def _raw(server: RunningServer, data: bytes, wait: float = 10.0) -> bytes:
    """Send ``data`` on a fresh connection; everything the server sends until it closes (or ``wait``)."""
    with socket.create_connection(("127.0.0.1", server.port), timeout=wait) as s:
        s.sendall(data)
        chunks = []
        try:
            while chunk := s.recv(65536):
                chunks.append(chunk)
        except TimeoutError:
            pass
        return b"".join(chunks)


def _status(response: bytes) -> int:
    return int(response.split(b" ", 2)[1])


def _error(response: bytes) -> str:
    message: str = json.loads(response.partition(b"\r\n\r\n")[2])["error"]
    return message


def test_a_long_url_is_a_414(limited: RunningServer) -> None:
    r = httpx.post(f"{limited.url}/v2/models/{'m' * 2000}/infer", json={"inputs": [X]})
    assert r.status_code == 414
    assert "longer than 1024 bytes" in r.json()["error"]


def test_oversized_headers_are_a_431_not_a_500(limited: RunningServer) -> None:
    r = httpx.get(f"{limited.url}/v2/health/live", headers={"x-padding": "p" * 5000})
    assert r.status_code == 431
    assert "larger than 4096 bytes" in r.json()["error"]
    assert httpx.get(f"{limited.url}/v2/health/live").status_code == 200  # the server is fine


def test_a_head_that_trickles_in_is_cut_off_with_408(limited: RunningServer) -> None:
    with socket.create_connection(("127.0.0.1", limited.port), timeout=10) as s:
        start = time.perf_counter()
        s.sendall(b"GET /v2/health/live HTTP/1.1\r\nHost: x\r\n")
        received = b""
        for _ in range(10):  # slowloris: one header line at a time, each well within any idle timeout
            try:
                s.sendall(b"X-a: b\r\n")
            except OSError:
                break
            time.sleep(0.4)
        s.settimeout(5)
        try:
            while chunk := s.recv(65536):
                received += chunk
        except (TimeoutError, ConnectionResetError):
            pass
    assert _status(received) == 408, received
    assert "head did not arrive in time" in _error(received)
    assert time.perf_counter() - start < 6


def test_a_stalled_body_is_cut_off_with_408(limited: RunningServer) -> None:
    head = b"POST /v2/models/mlp/infer HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n"
    response = _raw(limited, head + b'{"inputs": ')
    assert _status(response) == 408
    assert "body did not arrive in time" in _error(response)


def test_an_idle_kept_alive_connection_is_closed(limited: RunningServer) -> None:
    with socket.create_connection(("127.0.0.1", limited.port), timeout=10) as s:
        s.sendall(b"GET /v2/health/live HTTP/1.1\r\nHost: x\r\n\r\n")
        assert _status(s.recv(65536)) == 200
        start = time.perf_counter()
        assert s.recv(65536) == b""  # closed by the server, with nothing more to say
        assert 1.5 < time.perf_counter() - start < 6


def test_many_pipelined_requests_are_all_answered_in_order(limited: RunningServer) -> None:
    body = json.dumps({"inputs": [X]}).encode()
    one = b"POST /v2/models/mlp/infer HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body)
    n = 3 * LIMITS.max_pipelined
    with socket.create_connection(("127.0.0.1", limited.port), timeout=30) as s:
        s.sendall(one * n)
        received = b""
        while received.count(b"HTTP/1.1 200") < n:
            chunk = s.recv(1 << 20)
            assert chunk, "the connection closed before every pipelined request was answered"
            received += chunk


@pytest.mark.parametrize(
    "inputs",
    [
        [{"name": "x", "datatype": "FP32", "shape": [2**62, 0], "data": []}],  # once left the connection unanswered
        [{"name": "x", "datatype": "FP32", "shape": [2**62, 2**62], "data": []}],
        [{"name": "x", "datatype": "FP32", "shape": [2**64, 4], "data": []}],
        [{"name": "x", "datatype": "FP32", "shape": [-1, 4], "data": []}],
        [
            {"name": "x", "datatype": [], "shape": [1, 4], "data": [1, 2, 3, 4]}
        ],  # found by tests/protocol/test_hostile.py
    ],
)
def test_absurd_declared_shapes_are_a_4xx_and_the_connection_still_answers(
    limited: RunningServer, inputs: list[dict[str, object]]
) -> None:
    with httpx.Client(base_url=limited.url) as client:
        r = client.post("/v2/models/mlp/infer", json={"inputs": inputs})
        assert 400 <= r.status_code < 500, r.text
        assert "error" in r.json()
        assert client.post("/v2/models/mlp/infer", json={"inputs": [X]}).status_code == 200


def test_the_timeout_parameter_is_a_deadline(limited: RunningServer) -> None:
    url = f"{limited.url}/v2/models/mlp/infer"
    r = httpx.post(url, json={"inputs": [X], "parameters": {"timeout": -5}})
    assert r.status_code == 400 and "microseconds" in r.json()["error"]
    r = httpx.post(url, json={"inputs": [X], "parameters": {"timeout": 1}})  # 1 µs: gone before the queue
    assert r.status_code == 504
    r = httpx.post(url, json={"inputs": [X], "parameters": {"timeout": 10_000_000}})
    assert r.status_code == 200
    metrics = httpx.get(f"{limited.url}/metrics").text
    dropped = [line for line in metrics.splitlines() if line.startswith("leanserve_dropped_requests_total{")]
    assert any(
        'reason="deadline"' in line and 'model="mlp"' in line and float(line.split()[-1]) >= 1 for line in dropped
    )


@pytest.mark.parametrize(
    "path",
    [
        "/v2/models/..%2F..%2Fetc/infer",
        "/v2/models/mlp/versions/..%2F1/infer",
        "/v2/models/%2Fetc%2Fpasswd/infer",
        "/v2/models/mlp/versions/1%00/infer",
    ],
)
def test_names_and_versions_that_try_to_leave_the_repository_are_client_errors(
    limited: RunningServer, path: str
) -> None:
    r = httpx.post(f"{limited.url}{path}", json={"inputs": [X]})
    assert 400 <= r.status_code < 500, r.text
    assert "error" in r.json()


def test_no_cross_origin_access_by_default_and_loopback_only(limited: RunningServer) -> None:
    origin = {"origin": "https://elsewhere.example"}
    for r in (
        httpx.get(f"{limited.url}/v2", headers=origin),
        httpx.options(
            f"{limited.url}/v2/models/mlp/infer", headers={**origin, "access-control-request-method": "POST"}
        ),
        httpx.post(f"{limited.url}/v2/models/mlp/infer", json={"inputs": [X]}, headers=origin),
    ):
        assert not any(name.lower().startswith("access-control-") for name in r.headers), r.headers
    for listen in (Server, serve):  # the library's defaults (the CLI's --host says the same)
        assert inspect.signature(listen).parameters["host"].default == "127.0.0.1"
