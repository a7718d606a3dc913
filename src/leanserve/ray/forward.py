"""One HTTP request handed to an ASGI app inside the process, and its answer collected.

A Ray replica receives a request as arguments of a method call, not as a connection, so it
drives leanserve's Starlette app (:func:`leanserve.server.build_app`) itself. The client of such
a call never leaves while the app works: the caller awaits the answer. So ``receive`` gives the
body once and then waits until the answer is out before it says ``http.disconnect`` (saying it
at once would tell the app, and the router's watch for clients that left, that the caller had
gone, and every request would be answered 499).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, MutableMapping
from dataclasses import dataclass
from typing import Any

Message = MutableMapping[str, Any]
ASGIApp = Callable[[Message, Callable[[], Awaitable[Message]], Callable[[Message], Awaitable[None]]], Awaitable[None]]


@dataclass(frozen=True, slots=True)
class Call:
    """An HTTP request as data: what the ingress sends a model replica."""

    method: str
    path: str
    query: bytes = b""
    headers: tuple[tuple[str, str], ...] = ()  # lower-case names
    body: bytes = b""
    client: str | None = None


@dataclass(frozen=True, slots=True)
class Answer:
    """An HTTP response as data: what a model replica sends back."""

    status: int
    headers: tuple[tuple[str, str], ...]
    body: bytes


async def call_asgi(app: ASGIApp, call: Call) -> Answer:
    scope: Message = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": call.method,
        "scheme": "http",
        "path": call.path,
        "raw_path": call.path.encode(),
        "query_string": call.query,
        "root_path": "",
        "headers": [(k.encode("latin-1"), v.encode("latin-1")) for k, v in call.headers],
        "client": (call.client, 0) if call.client else None,
        "server": None,
    }
    answered = asyncio.Event()
    sent_body = False
    status = 500
    headers: list[tuple[str, str]] = []
    chunks: list[bytes] = []

    async def receive() -> Message:
        nonlocal sent_body
        if not sent_body:
            sent_body = True
            return {"type": "http.request", "body": call.body, "more_body": False}
        await answered.wait()  # the caller is waiting for the answer: it has not left
        return {"type": "http.disconnect"}

    async def send(message: Message) -> None:
        nonlocal status
        if message["type"] == "http.response.start":
            status = message["status"]
            headers.extend((k.decode("latin-1"), v.decode("latin-1")) for k, v in message.get("headers", ()))
        elif message["type"] == "http.response.body":
            chunks.append(message.get("body", b""))
            if not message.get("more_body", False):
                answered.set()

    try:
        await app(scope, receive, send)
    finally:
        answered.set()
    return Answer(status, tuple(headers), b"".join(chunks))
