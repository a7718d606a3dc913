"""gRPC's unary calls over HTTP/2 on the event loop: an asyncio protocol around ``h2``'s state machine.

Why not grpcio's server: measured on the tiny model at 32 concurrent calls, grpcio's asyncio server
spent about 365 us of server CPU per call, almost all of it in its own native layers (a
completion-queue poller thread, a task and batch operations per call); this transport spends
about 140 us (benchmarks/RESULTS.md, "gRPC beside Triton"). ``h2`` (the HTTP/2 state machine of
the hyper project) does the protocol's work (frames, HPACK, flow control, SETTINGS, PING) and
leaves the I/O to us, so that a call is a few method calls on the loop that also serves HTTP, as
:mod:`..http` does for HTTP/1.1: no thread, no task per call, and one write for the answers of a
batch.

Served: unary calls (one message each way), which is every method of the inference service that
leanserve serves; a streaming call is answered UNIMPLEMENTED by the service like any unknown
method. Requests may come compressed (``grpc-encoding`` gzip or deflate); answers go uncompressed.
:class:`GrpcServer` owns the listening socket and the connections; ``stop`` sends GOAWAY, lets the
calls in flight finish for the grace period, then closes.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from typing import Final, cast

import h2.config
import h2.connection
import h2.errors
import h2.events
import h2.exceptions
import h2.settings
from hyperframe.frame import GoAwayFrame

from .wire import (
    ENCODINGS,
    INTERNAL,
    PREFIX,
    RESOURCE_EXHAUSTED,
    UNAVAILABLE,
    UNIMPLEMENTED,
    Status,
    WireError,
    frame,
    timeout_seconds,
    too_large,
    unframe,
)

log = logging.getLogger("leanserve.server.grpc")

Reply = Callable[[bytes | Status], None]

_CONFIG: Final = h2.config.H2Configuration(
    client_side=False,
    header_encoding=None,  # bytes in and out: no decoding of headers nobody reads
    # h2's character checks of every inbound header cost a tenth of a call's CPU; the server reads
    # only :path, grpc-timeout, grpc-encoding (parsed here, anything else refused) and metadata
    # that it compares, never echoes or logs.
    validate_inbound_headers=False,
    validate_outbound_headers=False,  # ours are constants, well formed
    normalize_outbound_headers=False,
)
# What the server tells each client. Streams: calls in flight per connection (a gRPC channel opens
# one stream per call); windows: how much a client may send before we acknowledge it, large enough
# that a tensor of a few MB is not held up by round trips (grpcio reaches similar sizes by probing).
MAX_CONCURRENT_STREAMS: Final = 1024
_STREAM_WINDOW: Final = 1 << 22
_CONNECTION_WINDOW: Final = 1 << 24
_RESPONSE_HEADERS: Final = [
    (b":status", b"200"),
    (b"content-type", b"application/grpc"),
    (b"grpc-accept-encoding", ENCODINGS),
]
_OK_TRAILERS: Final = [(b"grpc-status", b"0")]
# Request headers that are HTTP/2's or gRPC's own, not the call's metadata.
_RESERVED: Final = frozenset(
    {b":method", b":scheme", b":path", b":authority", b"content-type", b"te", b"grpc-timeout", b"grpc-encoding"}
    | {b"grpc-accept-encoding", b"user-agent", b"content-length"}
)


class Call:
    """What a method knows of its call besides the message: metadata, deadline, peer.

    ``cancel``, when the method sets it, is called once if the client goes before the answer
    (RST_STREAM, the connection lost, the server stopping)."""

    __slots__ = ("cancel", "deadline", "encoding", "metadata", "peer")

    def __init__(
        self, metadata: list[tuple[bytes, bytes]], deadline: float | None, peer: str, encoding: bytes | None = None
    ) -> None:
        self.metadata = metadata  # (lower-case key, value), HTTP/2's and gRPC's own headers left out
        self.deadline = deadline  # event-loop time, from grpc-timeout
        self.peer = peer
        self.encoding = encoding  # grpc-encoding: how the request's message is compressed
        self.cancel: Callable[[], object] | None = None


Handler = Callable[[bytes, Call, Reply], None]
# A path's handler; or the status that answers it as soon as its headers come (a method not served:
# a streaming client would otherwise wait for an answer that comes only once it ends its stream).
Resolve = Callable[[bytes], Handler | Status | None]


def _nothing(message: bytes, call: Call, reply: Reply) -> None:
    """The handler of a stream answered at its headers: never called."""


class _Stream:
    """One call: the request's headers and body as they come, then the answer as flow control lets it go."""

    __slots__ = ("answered", "body", "call", "conn", "handler", "id", "pending", "trailers")

    def __init__(self, conn: GrpcConnection, stream_id: int, handler: Handler, call: Call) -> None:
        self.conn = conn
        self.id = stream_id
        self.handler = handler
        self.call = call
        self.body = bytearray()
        self.answered = False
        self.pending = b""  # framed answer that the client's window did not take yet
        self.trailers: list[tuple[bytes, bytes]] = []

    def reply(self, outcome: bytes | Status) -> None:
        """Answer the call (once): a serialized message, or a status (trailers only)."""
        if self.answered:
            return
        self.answered = True
        conn = self.conn
        if conn.closed:
            return
        h2c = conn.h2
        try:
            if isinstance(outcome, Status):
                h2c.send_headers(self.id, _RESPONSE_HEADERS + outcome.trailers(), end_stream=True)
                conn.finished(self)
            else:
                h2c.send_headers(self.id, _RESPONSE_HEADERS)
                self.pending = frame(outcome)
                self.trailers = _OK_TRAILERS
                conn.send_pending(self)
        except h2.exceptions.ProtocolError as e:  # the stream or connection closed meanwhile: nobody to tell
            log.debug("gRPC answer on stream %d not sent: %s", self.id, e)
            conn.finished(self)
            return
        conn.flush_soon()


class GrpcConnection(asyncio.Protocol):
    def __init__(self, server: GrpcServer) -> None:
        self.server = server
        self.h2 = h2.connection.H2Connection(_CONFIG)
        self.streams: dict[int, _Stream] = {}
        self.blocked: dict[int, _Stream] = {}  # answered, waiting for the client's window
        self.transport: asyncio.Transport | None = None
        self.peer = ""
        self.closed = False
        self.last_stream: int | None = None  # after GOAWAY: the last stream we still serve
        self.flush_scheduled = False

    # ---- asyncio ----------------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports implement asyncio.Transport without subclassing it.
        self.transport = cast(asyncio.Transport, transport)
        peer = transport.get_extra_info("peername")
        if isinstance(peer, tuple):  # grpcio's form: ipv4:127.0.0.1:5000, ipv6:[::1]:5000
            host = str(peer[0])
            self.peer = f"ipv6:[{host}]:{peer[1]}" if ":" in host else f"ipv4:{host}:{peer[1]}"
        self.server.connections.add(self)
        h2c = self.h2
        h2c.local_settings = h2.settings.Settings(
            client=False,
            initial_values={
                h2.settings.SettingCodes.MAX_CONCURRENT_STREAMS: MAX_CONCURRENT_STREAMS,
                h2.settings.SettingCodes.INITIAL_WINDOW_SIZE: _STREAM_WINDOW,
                h2.settings.SettingCodes.MAX_HEADER_LIST_SIZE: 1 << 16,
            },
        )
        h2c.initiate_connection()
        h2c.increment_flow_control_window(_CONNECTION_WINDOW)
        if self.server.stopping:
            self.go_away()
        self.flush()

    def connection_lost(self, exc: Exception | None) -> None:
        self._lost()

    def _lost(self) -> None:
        """No answer can reach the client any more: each call in flight is cancelled."""
        self.closed = True
        self.server.connections.discard(self)
        for stream in list(self.streams.values()):
            self._cancel(stream)
        self.streams.clear()
        self.blocked.clear()

    def data_received(self, data: bytes) -> None:
        try:
            events = self.h2.receive_data(data)
        except h2.exceptions.ProtocolError as e:  # h2 has queued its GOAWAY: send it and hang up
            log.debug("closing a gRPC connection from %s: %s", self.peer, e)
            self.flush()
            self.close()
            return
        for event in events:
            kind = type(event)
            if kind is h2.events.DataReceived:
                self._data(event)  # type: ignore[arg-type]
            elif kind is h2.events.RequestReceived:
                self._request(event)  # type: ignore[arg-type]
            elif kind is h2.events.StreamEnded:
                stream = self.streams.get(event.stream_id)  # type: ignore[attr-defined]
                if stream is not None and not stream.answered:
                    self._dispatch(stream)
            elif kind is h2.events.StreamReset:
                stream = self.streams.pop(event.stream_id, None)  # type: ignore[attr-defined]
                if stream is not None:
                    self.blocked.pop(stream.id, None)
                    self._cancel(stream)
            elif kind is h2.events.WindowUpdated:
                self._window(event.stream_id)  # type: ignore[attr-defined]
            elif kind is h2.events.RemoteSettingsChanged:
                self._window(0)  # a larger initial window grows every stream's without a WINDOW_UPDATE
            elif kind is h2.events.ConnectionTerminated:  # the client's GOAWAY: it reads no more answers
                self.flush()
                self._lost()
                self.close()
                return
        self.flush()

    # ---- calls ------------------------------------------------------------------------------

    def _request(self, event: h2.events.RequestReceived) -> None:
        stream_id = event.stream_id
        if self.last_stream is not None and stream_id > self.last_stream:
            self.h2.reset_stream(stream_id, h2.errors.ErrorCodes.REFUSED_STREAM)  # after GOAWAY: retry elsewhere
            return
        path = b""
        timeout: float | None = None
        encoding: bytes | None = None
        metadata: list[tuple[bytes, bytes]] = []
        for key, value in event.headers or ():
            if key not in _RESERVED:
                metadata.append((key, value))
            elif key == b":path":
                path = value
            elif key == b"grpc-timeout":
                timeout = timeout_seconds(value)
            elif key == b"grpc-encoding":
                encoding = value
        deadline = None if timeout is None else asyncio.get_running_loop().time() + timeout
        call = Call(metadata, deadline, self.peer, encoding)
        target = self.server.resolve(path)
        if target is None:
            target = Status(UNIMPLEMENTED, f"Method not found: {path.decode('latin-1')}")
        if isinstance(target, Status):  # answered now, whatever the client still sends
            self._refuse(_Stream(self, stream_id, _nothing, call), target)
            return
        # Dispatched at StreamEnded, which h2 reports after this event when the headers end the stream.
        self.streams[stream_id] = _Stream(self, stream_id, target, call)

    def _data(self, event: h2.events.DataReceived) -> None:
        stream = self.streams.get(event.stream_id)
        # Acknowledged at once: the size limit below bounds what a call holds, not the window.
        if event.flow_controlled_length:
            self.h2.acknowledge_received_data(event.flow_controlled_length, event.stream_id)
        if stream is None or stream.answered:
            return
        stream.body += event.data or b""
        limit = self.server.max_message_bytes
        if len(stream.body) > limit + PREFIX:
            length = max(int.from_bytes(stream.body[1:PREFIX], "big"), limit + 1)
            self._refuse(stream, Status(RESOURCE_EXHAUSTED, too_large(length, limit)))

    def _refuse(self, stream: _Stream, status: Status) -> None:
        """Answer before the request has ended, and tell the client to stop sending the rest
        (RST_STREAM with NO_ERROR: the answer is complete)."""
        stream.reply(status)
        stream.body = bytearray()
        if not self.closed:
            with contextlib.suppress(h2.exceptions.StreamClosedError):
                self.h2.reset_stream(stream.id, h2.errors.ErrorCodes.NO_ERROR)

    def _dispatch(self, stream: _Stream) -> None:
        call = stream.call
        try:
            message = unframe(stream.body, call.encoding, self.server.max_message_bytes)
        except WireError as e:
            stream.reply(Status(e.code, str(e)))
            return
        stream.body = bytearray()
        try:
            stream.handler(message, call, stream.reply)
        except Exception as e:  # a bug in a handler: the call is answered, the connection goes on
            log.exception("gRPC call on stream %d failed", stream.id)
            stream.reply(Status(INTERNAL, f"internal error: {type(e).__name__}: {e}"))

    def _cancel(self, stream: _Stream, status: Status | None = None) -> None:
        """The client will not get an answer (or gets ``status``): the call's method is told to stop."""
        call = stream.call
        if call.cancel is not None and not stream.answered:
            cancel, call.cancel = call.cancel, None
            cancel()
        if status is not None:
            stream.reply(status)
        stream.answered = True

    # ---- sending ----------------------------------------------------------------------------

    def send_pending(self, stream: _Stream) -> None:
        """Send as much of ``stream``'s answer as the client's windows take; the trailers after the last byte."""
        h2c = self.h2
        data = stream.pending
        while data:
            size = min(len(data), h2c.local_flow_control_window(stream.id), h2c.max_outbound_frame_size)
            if size <= 0:
                stream.pending = data
                self.blocked[stream.id] = stream
                return
            h2c.send_data(stream.id, data[:size] if size < len(data) else data)
            data = data[size:]
        stream.pending = b""
        self.blocked.pop(stream.id, None)
        h2c.send_headers(stream.id, stream.trailers, end_stream=True)
        self.finished(stream)

    def _window(self, stream_id: int) -> None:
        if not self.blocked:
            return
        if stream_id:
            stream = self.blocked.get(stream_id)
            if stream is not None:
                self.send_pending(stream)
        else:  # the connection's window: every waiting answer may go on
            for stream in list(self.blocked.values()):
                self.send_pending(stream)

    def finished(self, stream: _Stream) -> None:
        self.streams.pop(stream.id, None)
        if self.last_stream is not None and not self.streams:
            self.flush()
            self.close()  # gone away and drained

    def flush_soon(self) -> None:
        """Flush once this turn of the loop is over: the answers of one batch leave in one write."""
        if not self.flush_scheduled:
            self.flush_scheduled = True
            asyncio.get_running_loop().call_soon(self.flush)

    def flush(self) -> None:
        self.flush_scheduled = False
        data = self.h2.data_to_send()
        if data and self.transport is not None and not self.transport.is_closing():
            self.transport.write(data)

    # ---- shutdown ---------------------------------------------------------------------------

    def go_away(self) -> None:
        """Tell the client (GOAWAY, no error) that no stream after those open is served; close when they are done.

        The frame is written by hand rather than with ``h2.close_connection``, which would close h2's
        state machine at once and refuse the answers of the calls still in flight."""
        if self.last_stream is not None or self.closed:
            return
        self.last_stream = self.h2.highest_inbound_stream_id
        self.flush()
        goaway = GoAwayFrame(0)
        goaway.last_stream_id = self.last_stream
        goaway.error_code = h2.errors.ErrorCodes.NO_ERROR
        if self.transport is not None:
            self.transport.write(goaway.serialize())
        if not self.streams:
            self.close()

    def close(self) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self.transport.close()


class GrpcServer:
    """The listening socket and its connections: calls go to ``resolve(path)``'s handler."""

    def __init__(self, resolve: Resolve, max_message_bytes: int) -> None:
        self.resolve = resolve
        self.max_message_bytes = max_message_bytes
        self.connections: set[GrpcConnection] = set()
        self.stopping = False
        self._server: asyncio.Server | None = None

    async def listen(self, host: str, port: int, reuse_port: bool) -> int:
        """Bind and serve; the bound port (the system's choice when ``port`` is 0). OSError when it cannot bind."""
        loop = asyncio.get_running_loop()
        self._server = await loop.create_server(
            lambda: GrpcConnection(self),
            host,
            port,
            reuse_address=True,
            reuse_port=reuse_port or None,
            backlog=2048,
        )
        sockets = self._server.sockets
        bound: int = sockets[0].getsockname()[1] if sockets else port
        return bound

    async def stop(self, grace: float) -> None:
        """Accept no more connections, GOAWAY to each, wait up to ``grace`` s for the calls in flight, then close."""
        if self._server is None:
            return
        self.stopping = True
        self._server.close()
        for conn in list(self.connections):
            conn.go_away()
        loop = asyncio.get_running_loop()
        deadline = loop.time() + grace
        while any(conn.streams for conn in self.connections) and loop.time() < deadline:
            await asyncio.sleep(0.01)
        for conn in list(self.connections):
            for stream in list(conn.streams.values()):  # past the grace period: the call is cancelled
                conn._cancel(stream, Status(UNAVAILABLE, "the server is shutting down"))
            conn.flush()
            conn.close()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._server.wait_closed(), timeout=1.0)
        self._server = None


__all__ = ["MAX_CONCURRENT_STREAMS", "Call", "GrpcConnection", "GrpcServer", "Handler", "Reply"]
