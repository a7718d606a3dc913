"""A tiny HTTP/1.1 server whose answers come when a policy says: stalls and queues on demand.

It answers every POST with 200 and ``{}``, and every GET (the load generator's metadata request)
with one FP32 input of shape [-1, 4], at once. For a POST, ``answer_at(arrived)`` says when each request's
answer goes out; answers on one connection keep their order.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable

import httptools

METADATA = b'{"name":"fake","inputs":[{"name":"x","datatype":"FP32","shape":[-1,4]}],"outputs":[]}'
AnswerAt = Callable[[float], float]  # arrival time (perf_counter) -> when to answer


def _response(body: bytes, status: bytes = b"200 OK") -> bytes:
    head = b"HTTP/1.1 %s\r\ncontent-type: application/json\r\ncontent-length: %d\r\n\r\n" % (status, len(body))
    return head + body


class _Protocol(asyncio.Protocol):
    def __init__(self, server: FakeServer) -> None:
        self.server = server
        self.parser = httptools.HttpRequestParser(self)
        self.transport: asyncio.Transport | None = None
        self.last = 0.0  # when this connection's previous answer goes out: order is kept

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        self.parser.feed_data(data)

    def on_message_complete(self) -> None:
        arrived = time.perf_counter()
        if self.parser.get_method() == b"GET":
            if self.server.metadata and self.transport is not None:
                self.transport.write(_response(METADATA))
            elif self.transport is not None:  # a server without the metadata endpoint
                self.transport.write(_response(b'{"detail":"Not Found"}', b"404 Not Found"))
            return
        body = b"{}"
        self.server.requests += 1
        at = max(self.server.answer_at(arrived), self.last)
        self.last = at
        delay = at - arrived
        loop = asyncio.get_running_loop()
        if delay <= 0:
            self._send(body)
        else:
            loop.call_later(delay, self._send, body)

    def _send(self, body: bytes) -> None:
        if self.transport is not None and not self.transport.is_closing():
            if self.server.close:
                head = b"HTTP/1.1 200 OK\r\nconnection: close\r\ncontent-length: %d\r\n\r\n" % len(body)
                self.transport.write(head + body)
                self.transport.close()
                return
            self.transport.write(_response(body))

    def connection_lost(self, exc: Exception | None) -> None:
        self.transport = None


class FakeServer:
    def __init__(self, answer_at: AnswerAt, metadata: bool = True, close: bool = False) -> None:
        self.answer_at = answer_at
        self.metadata = metadata
        self.close = close  # answer with "connection: close" and close, as some servers do
        self.requests = 0
        self._loop = asyncio.new_event_loop()
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        asyncio.set_event_loop(self._loop)
        server = self._loop.run_until_complete(self._loop.create_server(lambda: _Protocol(self), "127.0.0.1", 0))
        self.port = server.sockets[0].getsockname()[1]
        self._ready.set()
        self._loop.run_forever()
        server.close()

    def __enter__(self) -> FakeServer:
        self._thread.start()
        self._ready.wait(10)
        self.url = f"http://127.0.0.1:{self.port}"
        return self

    def __exit__(self, *exc: object) -> None:
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)


class Stall:
    """Answer at once, except between ``start`` and ``start + seconds`` after the first POST: then at its end."""

    def __init__(self, after: float, seconds: float) -> None:
        self.after, self.seconds = after, seconds
        self.first: float | None = None

    def __call__(self, arrived: float) -> float:
        if self.first is None:
            self.first = arrived
        begin = self.first + self.after
        end = begin + self.seconds
        return end if begin <= arrived < end else arrived


class Queue:
    """One request at a time, ``service_s`` each: a server with a capacity of 1/service_s per second."""

    def __init__(self, service_s: float) -> None:
        self.service_s = service_s
        self.free_at = 0.0

    def __call__(self, arrived: float) -> float:
        self.free_at = max(self.free_at, arrived) + self.service_s
        return self.free_at
