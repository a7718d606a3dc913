"""Two come-back-later 503s (Retry-After) on one connection go out RETRY_HOLD_SECONDS apart.

A real HttpProtocol on a loopback socket, in front of handlers that answer as told: the first 503
goes out at once, a second refusal on that connection waits for the hold, a request admitted after a
503 is answered at once, other statuses hold nothing.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

from leanserve.protocol import Limits
from leanserve.server.handlers import Reply
from leanserve.server.http import RETRY_HOLD_SECONDS, ConnectionTracker, HttpProtocol

REQUEST = (
    b"POST /v2/models/m/infer HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 2\r\n\r\n{}"
)


class _Router:
    def __init__(self) -> None:
        self.on_failure = None
        self.unit_headers: set[bytes] = set()


class _Handlers:
    """Answers each inference request with the next reply in ``replies``, and notes when it came."""

    def __init__(self, replies: list[Reply]) -> None:
        self.router = _Router()
        self.replies = replies
        self.arrived: list[float] = []

    def infer(self, ctx: Any, model: str, version: Any, body: Any, done: Callable[[Reply], None]) -> None:
        self.arrived.append(asyncio.get_running_loop().time())
        done(self.replies[len(self.arrived) - 1])


async def _exchange(replies: list[Reply]) -> tuple[_Handlers, list[float], list[bytes]]:
    """Two requests on one kept-alive connection: when each answer came, and its status line."""
    handlers = _Handlers(replies)
    tracker = ConnectionTracker()
    loop = asyncio.get_running_loop()
    server = await loop.create_server(
        lambda: HttpProtocol(handlers, lambda *a: None, Limits(), tracker),  # type: ignore[arg-type]
        "127.0.0.1",
        0,
    )
    port = server.sockets[0].getsockname()[1]
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    answered: list[float] = []
    statuses: list[bytes] = []
    try:
        writer.write(REQUEST + REQUEST)  # the second is sent at once, as an impatient client would
        await writer.drain()
        for _ in range(2):
            statuses.append((await reader.readline()).strip())
            answered.append(loop.time())
            length = 0
            while (line := await reader.readline()) != b"\r\n":
                if line.lower().startswith(b"content-length:"):
                    length = int(line.split(b":")[1])
            await reader.readexactly(length)
    finally:
        writer.close()
        server.close()
        await server.wait_closed()
    return handlers, answered, statuses


async def test_a_second_retry_after_503_waits_for_the_hold() -> None:
    busy = Reply(503, b'{"error":"overloaded"}', headers=((b"retry-after", b"1"),))
    handlers, answered, statuses = await _exchange([busy, busy])
    assert statuses == [b"HTTP/1.1 503 Service Unavailable"] * 2
    # Both were dispatched at once (the client sent them together); the second refusal waited.
    assert handlers.arrived[1] - handlers.arrived[0] < RETRY_HOLD_SECONDS / 2
    # A lower bound only: load can make the second answer later, never earlier.
    assert answered[1] - answered[0] >= RETRY_HOLD_SECONDS * 0.95


async def test_a_request_admitted_after_a_503_is_not_held() -> None:
    busy = Reply(503, b'{"error":"overloaded"}', headers=((b"retry-after", b"1"),))
    _, answered, statuses = await _exchange([busy, Reply(200, b"{}")])
    assert statuses == [b"HTTP/1.1 503 Service Unavailable", b"HTTP/1.1 200 OK"]
    # An open-loop client reusing the connection for an unrelated request must not pay the hold.
    assert answered[1] - answered[0] < RETRY_HOLD_SECONDS / 2


async def test_other_answers_hold_nothing() -> None:
    handlers = _Handlers([Reply(400, b'{"error":"bad"}'), Reply(200, b"{}")])
    protocol = HttpProtocol(handlers, lambda *a: None, Limits(), ConnectionTracker())  # type: ignore[arg-type]
    transport = _Transport()
    protocol.connection_made(transport)  # type: ignore[arg-type]
    protocol.data_received(REQUEST + REQUEST)
    await asyncio.sleep(0)
    assert len(handlers.arrived) == 2  # the second was read right after the 400, not after a hold
    assert transport.written.count(b"HTTP/1.1 ") == 2
    # And a 503 without Retry-After (a broken model) is final, not "come back later": no hold either.
    handlers = _Handlers([Reply(503, b'{"error":"broken"}'), Reply(200, b"{}")])
    protocol = HttpProtocol(handlers, lambda *a: None, Limits(), ConnectionTracker())  # type: ignore[arg-type]
    protocol.connection_made(_Transport())  # type: ignore[arg-type]
    protocol.data_received(REQUEST + REQUEST)
    assert len(handlers.arrived) == 2  # dispatched at once: a hold would have left it queued


async def test_a_hold_ends_with_the_connection() -> None:
    busy = Reply(503, b'{"error":"overloaded"}', headers=((b"retry-after", b"1"),))
    handlers = _Handlers([busy, busy, Reply(200, b"{}")])
    protocol = HttpProtocol(handlers, lambda *a: None, Limits(), ConnectionTracker())  # type: ignore[arg-type]
    transport = _Transport()
    protocol.connection_made(transport)  # type: ignore[arg-type]
    protocol.data_received(REQUEST + REQUEST + REQUEST)
    # The second refusal is held, the third request queued behind it: shutdown waits for them.
    assert len(handlers.arrived) == 2 and protocol.busy
    assert transport.written.count(b"HTTP/1.1 ") == 1
    protocol.connection_lost(None)
    await asyncio.sleep(RETRY_HOLD_SECONDS * 1.5)
    assert len(handlers.arrived) == 2  # the queued request of a gone client was never dispatched
    assert transport.written.count(b"HTTP/1.1 ") == 1


class _Transport:
    """The part of asyncio.Transport the protocol uses."""

    def __init__(self) -> None:
        self.written = b""
        self.closed = False

    def get_extra_info(self, name: str) -> Any:
        return ("127.0.0.1", 1)

    def write(self, data: bytes) -> None:
        self.written += data

    def writelines(self, parts: list[bytes]) -> None:
        self.written += b"".join(parts)

    def close(self) -> None:
        self.closed = True

    def is_closing(self) -> bool:
        return self.closed

    def pause_reading(self) -> None:
        pass

    def resume_reading(self) -> None:
        pass
