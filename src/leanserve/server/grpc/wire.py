"""gRPC's own layer over HTTP/2, as pure functions: message frames, ``grpc-timeout``, status trailers.

What gRPC adds to an HTTP/2 stream (the "gRPC over HTTP2" protocol document): each message is a
5-byte prefix (a compressed flag and a big-endian length) and the message; a call's deadline comes
as the ``grpc-timeout`` header; its outcome goes back as the ``grpc-status`` and ``grpc-message``
trailers, the message percent-encoded. :mod:`.transport` moves the bytes; this module only says
what they mean, so it is tested without sockets.
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass, field
from typing import Final

import grpc

PREFIX: Final = 5  # compressed flag (1 byte) and the message's length (4 bytes, big-endian)
# grpc-timeout's units (at most 8 digits, then one of these), in seconds.
_TIMEOUT_UNITS: Final[dict[int, float]] = {
    ord("H"): 3600.0,
    ord("M"): 60.0,
    ord("S"): 1.0,
    ord("m"): 1e-3,
    ord("u"): 1e-6,
    ord("n"): 1e-9,
}
# The compressions a client may use for its messages (grpc-encoding); answers go uncompressed.
ENCODINGS: Final = b"identity,deflate,gzip"
# Codes of the protocol that the transport answers itself, as numbers on the wire; grpcio's enum
# is the one list of them (status.py maps the service's errors onto it too).
RESOURCE_EXHAUSTED: Final[int] = grpc.StatusCode.RESOURCE_EXHAUSTED.value[0]
UNIMPLEMENTED: Final[int] = grpc.StatusCode.UNIMPLEMENTED.value[0]
INTERNAL: Final[int] = grpc.StatusCode.INTERNAL.value[0]
UNAVAILABLE: Final[int] = grpc.StatusCode.UNAVAILABLE.value[0]


class WireError(Exception):
    """A call that breaks gRPC's framing; answered with ``code`` and the message."""

    def __init__(self, code: int, message: str) -> None:
        super().__init__(message)
        self.code = code


@dataclass(frozen=True, slots=True)
class Status:
    """A call's outcome as its trailers say it: ``grpc-status``, ``grpc-message`` and any other metadata."""

    code: int
    message: str = ""
    metadata: tuple[tuple[str, str], ...] = field(default=())

    def trailers(self) -> list[tuple[bytes, bytes]]:
        out = [(b"grpc-status", b"%d" % self.code)]
        if self.message:
            out.append((b"grpc-message", percent_encoded(self.message)))
        out += [(k.encode("ascii"), v.encode("latin-1")) for k, v in self.metadata]
        return out


def frame(message: bytes) -> bytes:
    """A message as it goes on the wire: not compressed, its length, the message."""
    return b"\x00" + len(message).to_bytes(4, "big") + message


def unframe(body: bytes | bytearray, encoding: bytes | None, max_bytes: int) -> bytes:
    """The one message of a unary call's request body (decompressed); WireError when the body is not one.

    ``max_bytes`` bounds the message, compressed or not, as grpcio's ``max_receive_message_length``
    does (RESOURCE_EXHAUSTED, with grpcio's words, so that clients read the same text)."""
    if len(body) < PREFIX:
        raise WireError(INTERNAL, f"the request carries no gRPC message ({len(body)} bytes)")
    length = int.from_bytes(body[1:PREFIX], "big")
    if length > max_bytes:
        raise WireError(RESOURCE_EXHAUSTED, too_large(length, max_bytes))
    if len(body) != PREFIX + length:
        raise WireError(UNIMPLEMENTED if len(body) > PREFIX + length else INTERNAL, _not_one_message(len(body), length))
    message = bytes(body[PREFIX:])
    if body[0] == 0:
        return message
    if body[0] != 1 or encoding in (None, b"identity"):
        raise WireError(INTERNAL, "a compressed message without a grpc-encoding that says how")
    return _decompressed(message, encoding, max_bytes)


def too_large(length: int, max_bytes: int) -> str:
    return f"Received message larger than max ({length} vs. {max_bytes})"


def _not_one_message(body: int, length: int) -> str:
    if body > PREFIX + length:
        return "a unary call carries one message; the request has more"
    return f"the request's message is cut short ({body - PREFIX} of {length} bytes)"


def _decompressed(message: bytes, encoding: bytes, max_bytes: int) -> bytes:
    if encoding not in (b"gzip", b"deflate"):
        raise WireError(UNIMPLEMENTED, f"grpc-encoding {encoding.decode('latin-1')!r} is not supported (gzip, deflate)")
    # gzip: a gzip header (wbits 16+); deflate: zlib's (wbits 15). At most max_bytes + 1 come out,
    # so a small bomb cannot grow into memory.
    inflater = zlib.decompressobj(31 if encoding == b"gzip" else 15)
    try:
        out = inflater.decompress(message, max_bytes + 1)
    except zlib.error as e:
        raise WireError(INTERNAL, f"the {encoding.decode()} message does not decompress: {e}") from None
    if len(out) > max_bytes:
        raise WireError(RESOURCE_EXHAUSTED, too_large(len(out), max_bytes))
    return out


def timeout_seconds(value: bytes) -> float | None:
    """``grpc-timeout`` (``"100m"``: 100 milliseconds) in seconds; None when it is not one."""
    unit = _TIMEOUT_UNITS.get(value[-1]) if value else None
    digits = value[:-1]
    if unit is None or not digits.isdigit() or len(digits) > 8:
        return None
    return int(digits) * unit


def percent_encoded(text: str) -> bytes:
    """``grpc-message``'s encoding: printable ASCII but ``%`` as it is, every other byte of UTF-8 as ``%XX``."""
    data = text.encode("utf-8")
    if all(0x20 <= b <= 0x7E and b != 0x25 for b in data):
        return data
    return b"".join(bytes((b,)) if 0x20 <= b <= 0x7E and b != 0x25 else b"%%%02X" % b for b in data)


__all__ = [
    "ENCODINGS",
    "PREFIX",
    "Status",
    "WireError",
    "frame",
    "percent_encoded",
    "timeout_seconds",
    "too_large",
    "unframe",
]
