"""The HTTP/1.1 front end: httptools on asyncio (uvloop when present).

Inference and health are answered here directly, without a framework on the path: measured on
the 2-core reference machine, uvicorn + Starlette cost 1.5-2.5x per request against this (see
benchmarks/RESULTS.md). Every other path is handed, as a plain ASGI call, to the Starlette app,
where clarity matters more than microseconds.

One connection answers its requests strictly in order (HTTP/1.1 pipelining), one at a time.
"""

from __future__ import annotations

import asyncio
import logging
import re
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Final, cast
from urllib.parse import unquote

import httptools

from ..errors import HeadersTooLarge, InvalidInput, LeanserveError, PayloadTooLarge, UriTooLong
from ..protocol import Limits, encode_error
from ..router import InferBody, RequestContext, next_request_id
from .handlers import Handlers, Reply
from .idle_poll import IdlePoll
from .timeouts import Phase, Progress

log = logging.getLogger("leanserve.http")

_INFER = re.compile(r"^/v2/models/([^/]+)(?:/versions/([^/]+))?/infer$")
_REASONS = {
    100: b"Continue",
    200: b"OK",
    400: b"Bad Request",
    401: b"Unauthorized",
    403: b"Forbidden",
    404: b"Not Found",
    405: b"Method Not Allowed",
    408: b"Request Timeout",
    409: b"Conflict",
    413: b"Payload Too Large",
    414: b"URI Too Long",
    415: b"Unsupported Media Type",
    431: b"Request Header Fields Too Large",
    500: b"Internal Server Error",
    503: b"Service Unavailable",
    504: b"Gateway Timeout",
}
_OK_HEAD = b"HTTP/1.1 200 OK\r\ncontent-type: %s\r\ncontent-length: %d\r\n\r\n"
_OK_HEAD_WITH = b"HTTP/1.1 200 OK\r\ncontent-type: %s\r\ncontent-length: %d\r\n%s\r\n"
# Inference URLs seen, parsed: a client calls the same few again and again. Bounded, so that
# made-up URLs cannot grow it.
_INFER_TARGETS: dict[bytes, tuple[str, str | None] | None] = {}
_INFER_TARGETS_MAX = 4096
# Request headers the fast path reads besides Content-Length (and the router's, which it asks for):
# most requests send none, and the fields they set are reset only after one that did.
_NOTED_HEADERS: Final = frozenset(
    {b"inference-header-content-length", b"content-encoding", b"x-request-id", b"authorization", b"expect"}
)
# Two come-back-later 503s (with Retry-After) on one connection go out at least this far apart: a
# client that resends at once would otherwise turn an overload into a flood of refusals whose CPU
# (its own and the server's) comes out of the engine's cores. Only the refusal waits: a request
# admitted after a 503 goes straight on (holding the connection's next request instead delayed the
# admitted ones of an open-loop client that reuses connections by up to this much), and a
# connection's first refusal goes out at once.
RETRY_HOLD_SECONDS: Final = 0.1

ASGIApp = Callable[..., Any]
# At shutdown an idle kept-alive connection stays open this long: its client may be sending its
# next request right now, and closing at once would drop that request unread. One that comes is
# answered, with ``connection: close``.
SHUTDOWN_LINGER_SECONDS = 0.5


@dataclass(slots=True)
class _Request:
    method: bytes
    url: bytes
    headers: list[tuple[bytes, bytes]]
    body: bytes
    keep_alive: bool
    header_length: str | None = None
    content_encoding: str | None = None
    request_id: str | None = None
    authorization: str | None = None
    context_headers: tuple[tuple[str, str], ...] = ()  # for the router: an experiment's unit


@dataclass(slots=True)
class ConnectionTracker:
    """The open connections, so shutdown can close idle ones and wait for busy ones."""

    connections: set[HttpProtocol] = field(default_factory=set)

    @property
    def busy(self) -> int:
        return sum(1 for c in self.connections if c.busy or c.receiving)


def _infer_target(url: bytes) -> tuple[str, str | None] | None:
    """(model, version) of an inference URL (its path, or the path and a query), or None when it is not one."""
    try:
        return _INFER_TARGETS[url]
    except KeyError:
        pass
    match = _INFER.match(url.partition(b"?")[0].decode("latin-1"))
    target: tuple[str, str | None] | None = None
    if match is not None:
        model, version = match.group(1), match.group(2)
        if "%" in model or (version and "%" in version):
            model, version = unquote(model), version and unquote(version)
        target = (model, version)
    if len(_INFER_TARGETS) >= _INFER_TARGETS_MAX:
        _INFER_TARGETS.clear()
    _INFER_TARGETS[url] = target
    return target


def status_line(status: int) -> bytes:
    return b"HTTP/1.1 %d %s\r\n" % (status, _REASONS.get(status, b"Unknown"))


class HttpProtocol(asyncio.Protocol):
    def __init__(
        self,
        handlers: Handlers,
        app: ASGIApp,
        limits: Limits,
        tracker: ConnectionTracker,
        idle_poll: IdlePoll | None = None,
    ) -> None:
        self._handlers = handlers
        self._app = app
        self._limits = limits
        self._tracker = tracker
        self._parser = httptools.HttpRequestParser(self)
        self._transport: asyncio.Transport | None = None
        self._url = b""
        self._headers: list[tuple[bytes, bytes]] = []
        self._header_bytes = 0
        self._body: list[bytes] = []
        self._body_size = 0
        self._header_length: str | None = None
        self._content_encoding: str | None = None
        self._request_id: str | None = None
        self._authorization: str | None = None
        self._length_value: bytes | None = None  # the first Content-Length
        self._expect_continue = False
        self._noted = False  # a header of _NOTED_HEADERS or the router's was read since the last reset
        # The headers the router asks for (experiments' unit headers), a set it keeps up to date.
        self._context_names = handlers.router.unit_headers
        self._context_headers: tuple[tuple[str, str], ...] = ()
        self._queue: deque[_Request] = deque()
        self._active = False
        self._closing = False  # no more requests: close once the current one is answered
        self._rejected = False  # an over-limit message: ignore its remaining bytes
        self._paused = False
        self._hold: asyncio.TimerHandle | None = None  # a 503 waiting for RETRY_HOLD_SECONDS after the last
        self._refused_at = -RETRY_HOLD_SECONDS  # loop time the connection's last come-back-later 503 was sent
        self._asgi_task: asyncio.Task[None] | None = None
        self._client: tuple[str, int] | None = None
        # For the timeout sweeper (timeouts.py), which samples them: no clock is read per request.
        self._messages = 0  # requests begun
        self._received = 0  # bytes received
        self._receiving = 0  # 0: between requests, 1: a head is arriving, 2: a body
        # The last inference request dispatched: told when the client hangs up, so the batcher
        # drops it before the engine if it is still queued (harmless once it was answered).
        self._caller: RequestContext | None = None
        self._server: tuple[str, int] | None = None
        self._idle_poll = idle_poll  # kicked by each answer (see idle_poll.py); None: the loop sleeps at once

    @property
    def busy(self) -> bool:
        return self._active or bool(self._queue)

    @property
    def receiving(self) -> bool:
        """A request is partly received: shutdown waits for it (it was accepted), timeouts bound it."""
        return self._receiving != 0 and not self._rejected

    def progress(self) -> Progress:
        if self.busy:
            phase = Phase.BUSY
        elif self._receiving == 1:
            phase = Phase.HEAD
        elif self._receiving == 2:
            phase = Phase.BODY
        else:
            phase = Phase.IDLE
        return Progress(phase, self._messages, self._received)

    def time_out(self, phase: Phase) -> None:
        """The sweeper found the client too slow: 408 to a request in progress, or close an idle connection."""
        if phase is Phase.IDLE:
            if self._transport is not None:
                self._transport.close()
            return
        what = "head" if phase is Phase.HEAD else "body"
        seconds = self._limits.header_timeout_s if phase is Phase.HEAD else self._limits.body_timeout_s
        self._fail(408, f"the request's {what} did not arrive in time (limit {seconds} s): connection closed")

    # ---- asyncio.Protocol ----------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports implement asyncio.Transport without subclassing it.
        self._transport = cast(asyncio.Transport, transport)
        self._client = transport.get_extra_info("peername")
        self._server = transport.get_extra_info("sockname")
        self._tracker.connections.add(self)

    def connection_lost(self, exc: Exception | None) -> None:
        self._tracker.connections.discard(self)
        self._transport = None
        if self._hold is not None:
            self._hold.cancel()
            self._hold = None
        if self._caller is not None:
            self._caller.gone = True
        self._queue.clear()

    def data_received(self, data: bytes) -> None:
        if self._rejected:
            return
        self._received += len(data)
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            self._fail(400, "protocol upgrades are not supported")
        except httptools.HttpParserError as e:
            # httptools wraps what our callbacks raise (limits) in HttpParserCallbackError.
            cause = e.__context__ or e.__cause__
            if isinstance(cause, LeanserveError):
                self._fail(cause.status, str(cause))
            else:
                self._fail(400, f"malformed HTTP request: {e}")
        except LeanserveError as e:
            self._fail(e.status, str(e))

    def close(self) -> None:
        """Shutdown: close now when idle, else after the request in progress (or partly received)."""
        self._closing = True
        if not self.busy and not self.receiving and self._transport is not None:
            asyncio.get_running_loop().call_later(SHUTDOWN_LINGER_SECONDS, self._close_if_idle)

    def _close_if_idle(self) -> None:
        if not self.busy and not self.receiving and self._transport is not None:
            self._transport.close()

    # ---- httptools callbacks ------------------------------------------------------------------

    def on_message_begin(self) -> None:
        self._url = b""
        self._headers = []
        self._header_bytes = 0
        self._body = []
        self._body_size = 0
        self._length_value = None
        if self._noted:  # only a request that sent one of the rarer headers set these
            self._header_length = None
            self._content_encoding = None
            self._request_id = None
            self._authorization = None
            self._expect_continue = False
            self._context_headers = ()
            self._noted = False
        self._messages += 1
        self._receiving = 1

    def on_url(self, url: bytes) -> None:
        self._url += url
        if len(self._url) > self._limits.max_url_bytes:
            raise UriTooLong(
                f"request URL longer than {self._limits.max_url_bytes} bytes", hint="raise --max-url-bytes"
            )

    def on_header(self, name: bytes, value: bytes) -> None:
        self._header_bytes += len(name) + len(value)
        if self._header_bytes > self._limits.max_header_bytes:
            raise HeadersTooLarge(
                f"request headers larger than {self._limits.max_header_bytes} bytes", hint="raise --max-header-bytes"
            )
        name = name.lower()
        self._headers.append((name, value))
        if name == b"content-length":
            if self._length_value is None:
                self._length_value = value
        elif name in _NOTED_HEADERS or name in self._context_names:
            self._note(name, value)

    def _note(self, name: bytes, value: bytes) -> None:
        """A header the request path reads, other than Content-Length (on_message_begin resets these)."""
        self._noted = True
        if name == b"inference-header-content-length":
            self._header_length = value.decode("latin-1")
        elif name == b"content-encoding":
            self._content_encoding = value.decode("latin-1")
        elif name == b"x-request-id":
            self._request_id = value[:128].decode("latin-1")
        elif name == b"authorization":
            self._authorization = value.decode("latin-1")
        elif name == b"expect":
            self._expect_continue = self._expect_continue or value.lower() == b"100-continue"
        elif name in self._context_names:
            self._context_headers += ((name.decode("latin-1"), value.decode("latin-1")),)

    def on_headers_complete(self) -> None:
        self._receiving = 2
        length = self._content_length()
        if length is not None and length > self._limits.max_body_bytes:
            raise PayloadTooLarge(
                f"request body of {length} bytes exceeds the limit of {self._limits.max_body_bytes}",
                hint="send fewer items per request or raise --max-body-bytes",
            )
        if self._expect_continue and self._transport is not None:
            self._transport.write(b"HTTP/1.1 100 Continue\r\n\r\n")

    def on_body(self, body: bytes) -> None:
        self._body_size += len(body)
        if self._body_size > self._limits.max_body_bytes:
            raise PayloadTooLarge(
                f"request body exceeds the limit of {self._limits.max_body_bytes} bytes",
                hint="send fewer items per request or raise --max-body-bytes",
            )
        self._body.append(body)

    def on_message_complete(self) -> None:
        self._receiving = 0
        body = self._body[0] if len(self._body) == 1 else b"".join(self._body)
        method = self._parser.get_method()
        if method == b"POST" and not self._active and not self._queue and self._transport is not None:
            # The common case, an inference request on an idle connection, goes straight on: no
            # queued request to build for it (and its URL looked up whole: no query to cut off).
            target = _infer_target(self._url)
            if target is not None:
                self._active = True
                if self._idle_poll is not None:
                    self._idle_poll.caught = True
                self._infer(
                    target,
                    body,
                    self._parser.should_keep_alive(),
                    self._header_length,
                    self._content_encoding,
                    self._request_id,
                    self._authorization,
                    self._context_headers,
                )
                return
        request = _Request(
            method,
            self._url,
            self._headers,
            body,
            self._parser.should_keep_alive(),
            self._header_length,
            self._content_encoding,
            self._request_id,
            self._authorization,
            self._context_headers,
        )
        self._queue.append(request)
        if len(self._queue) > self._limits.max_pipelined and self._transport is not None and not self._paused:
            self._transport.pause_reading()
            self._paused = True
        if not self._active:
            self._next()

    # ---- dispatch -----------------------------------------------------------------------------

    def _content_length(self) -> int | None:
        if self._length_value is None:
            return None
        try:
            return int(self._length_value)
        except ValueError:
            raise InvalidInput("Content-Length is not an integer") from None

    def _next(self) -> None:
        while self._queue and not self._active and self._transport is not None:
            request = self._queue.popleft()
            if self._paused and len(self._queue) <= self._limits.max_pipelined // 2:
                self._transport.resume_reading()
                self._paused = False
            self._active = True
            self._dispatch(request)

    def _dispatch(self, request: _Request) -> None:
        path, _, query = request.url.partition(b"?")
        if request.method == b"POST":
            target = _infer_target(path)
            if target is not None:
                self._infer(
                    target,
                    request.body,
                    request.keep_alive,
                    request.header_length,
                    request.content_encoding,
                    request.request_id,
                    request.authorization,
                    request.context_headers,
                )
                return
        elif request.method == b"GET":
            if path == b"/v2/health/ready":
                self._send(self._handlers.ready(), request.keep_alive)
                return
            if path == b"/v2/health/live":
                self._send(self._handlers.live(), request.keep_alive)
                return
        # Held on the connection (one request at a time): the loop keeps only weak references to tasks.
        self._asgi_task = asyncio.get_running_loop().create_task(self._asgi(request, path, query))

    def _infer(
        self,
        target: tuple[str, str | None],
        body: bytes,
        keep_alive: bool,
        header_length: str | None,
        content_encoding: str | None,
        request_id: str | None,
        authorization: str | None,
        context_headers: tuple[tuple[str, str], ...],
    ) -> None:
        model, version = target
        ctx = RequestContext(
            request_id or next_request_id(),
            self._client[0] if self._client else None,
            context_headers,
            authorization=authorization,
        )
        self._caller = ctx
        self._handlers.infer(
            ctx,
            model,
            version,
            InferBody(body, header_length, content_encoding),
            # Kept alive (the common case): answered by _send itself, not through a closure around it.
            self._send if keep_alive else lambda reply: self._send(reply, False),
        )

    def _send(self, reply: Reply, keep_alive: bool = True, held: bool = False) -> None:
        transport = self._transport
        self._active = False
        if transport is None:
            return
        keep_alive = keep_alive and not self._closing
        if reply.status == 200 and keep_alive and reply.header_length is None and len(reply.body) < 64 * 1024:
            # The common answer in one formatting step: a plain JSON 200 on a kept-alive connection
            # (through an experiment alias, with the header naming the arm).
            if not reply.headers:
                transport.write(_OK_HEAD % (reply.content_type, len(reply.body)) + reply.body)
            else:
                headers = reply.headers
                if len(headers) == 1:  # an experiment's arm: one header, without a list to join
                    extra = headers[0][0] + b": " + headers[0][1] + b"\r\n"
                else:
                    extra = b"".join([name + b": " + value + b"\r\n" for name, value in headers])
                transport.write(_OK_HEAD_WITH % (reply.content_type, len(reply.body), extra) + reply.body)
            if self._idle_poll is not None:
                self._idle_poll.kick()
            if self._queue:
                self._next()
            return
        if keep_alive and reply.status == 503 and any(name == b"retry-after" for name, _ in reply.headers):
            now = asyncio.get_running_loop().time()
            due = self._refused_at + RETRY_HOLD_SECONDS
            if not held and now < due:
                # What arrives meanwhile queues, as behind a request in progress.
                self._active = True
                self._hold = asyncio.get_running_loop().call_later(due - now, self._release, reply, keep_alive)
                return
            self._refused_at = now
        head = [
            status_line(reply.status),
            b"content-type: ",
            reply.content_type,
            b"\r\ncontent-length: ",
            str(len(reply.body)).encode(),
            b"\r\n",
        ]
        if reply.header_length is not None:
            head += [b"inference-header-content-length: ", str(reply.header_length).encode(), b"\r\n"]
        for name, value in reply.headers:
            head += [name, b": ", value, b"\r\n"]
        if not keep_alive:
            head.append(b"connection: close\r\n")
        head.append(b"\r\n")
        if len(reply.body) < 64 * 1024:
            head.append(reply.body)
            transport.write(b"".join(head))
        else:
            transport.writelines([b"".join(head), reply.body])
        if not keep_alive:
            transport.close()
            return
        if self._queue:
            self._next()

    def _release(self, reply: Reply, keep_alive: bool) -> None:
        """A held 503's time has come: send it (``_send`` then reads the next request, or closes)."""
        self._hold = None
        self._send(reply, keep_alive, held=True)

    def _fail(self, status: int, message: str) -> None:
        """A request that cannot be parsed or is over a limit: answer and close the connection."""
        hook = self._handlers.router.on_failure
        if hook is not None:  # refused before any model was named: logged with none
            error = LeanserveError(message)
            error.status = status
            target = _infer_target(self._url) if self._url else None
            model, version = target if target is not None else ("", None)
            hook(RequestContext(self._request_id or next_request_id(), self._client[0] if self._client else None),
                 model, version or "", error)  # fmt: skip
        self._rejected = True
        self._queue.clear()
        self._closing = True
        if self._transport is not None and not self._active:
            self._send(Reply(status, encode_error(message)), keep_alive=False)

    # ---- the ASGI bridge ------------------------------------------------------------------------

    async def _asgi(self, request: _Request, path: bytes, query: bytes) -> None:
        raw_path = path
        scope = {
            "type": "http",
            "asgi": {"version": "3.0", "spec_version": "2.3"},
            "http_version": "1.1",
            "method": request.method.decode("latin-1"),
            "scheme": "http",
            "path": unquote(raw_path.decode("latin-1")),
            "raw_path": raw_path,
            "query_string": query,
            "root_path": "",
            "headers": request.headers,
            "client": self._client,
            "server": self._server,
        }
        received = False
        started = False
        chunked = False
        keep_alive = request.keep_alive and not self._closing
        disconnected = asyncio.Event()

        async def receive() -> dict[str, Any]:
            nonlocal received
            if not received:
                received = True
                return {"type": "http.request", "body": request.body, "more_body": False}
            await disconnected.wait()
            return {"type": "http.disconnect"}

        async def send(message: dict[str, Any]) -> None:
            nonlocal started, chunked, keep_alive
            transport = self._transport
            if transport is None:
                return
            if message["type"] == "http.response.start":
                started = True
                headers = [(k.lower(), v) for k, v in message.get("headers", [])]
                chunked = not any(k == b"content-length" for k, _ in headers)
                head = [status_line(message["status"])]
                head += [k + b": " + v + b"\r\n" for k, v in headers]
                if chunked:
                    head.append(b"transfer-encoding: chunked\r\n")
                if not keep_alive:
                    head.append(b"connection: close\r\n")
                head.append(b"\r\n")
                transport.write(b"".join(head))
            elif message["type"] == "http.response.body":
                body = message.get("body", b"")
                more = message.get("more_body", False)
                if chunked:
                    if body:
                        transport.write(b"%x\r\n%s\r\n" % (len(body), body))
                    if not more:
                        transport.write(b"0\r\n\r\n")
                elif body:
                    transport.write(body)

        try:
            await self._app(scope, receive, send)
        except Exception:
            log.exception("error in %s %s", scope["method"], scope["path"])
            if not started:
                await send(
                    {"type": "http.response.start", "status": 500, "headers": [(b"content-type", b"application/json")]}
                )
                await send({"type": "http.response.body", "body": encode_error("internal server error")})
        finally:
            disconnected.set()
        self._active = False
        if self._transport is None:
            return
        if not keep_alive:
            self._transport.close()
        elif self._queue:
            self._next()
