"""gRPC's framing, timeouts and status trailers, without sockets."""

from __future__ import annotations

import gzip
import zlib

import pytest

from leanserve.server.grpc.wire import (
    INTERNAL,
    RESOURCE_EXHAUSTED,
    UNIMPLEMENTED,
    Status,
    WireError,
    frame,
    percent_encoded,
    timeout_seconds,
    unframe,
)


def test_a_framed_message_comes_back_as_it_went() -> None:
    assert frame(b"abc") == b"\x00\x00\x00\x00\x03abc"
    assert unframe(frame(b"abc"), None, 10) == b"abc"
    assert unframe(frame(b""), b"identity", 10) == b""


@pytest.mark.parametrize(
    ("body", "code", "words"),
    [
        (b"\x00\x00\x00", INTERNAL, "no gRPC message"),
        (frame(b"abc")[:-1], INTERNAL, "cut short (2 of 3 bytes)"),
        (frame(b"abc") + frame(b"d"), UNIMPLEMENTED, "one message"),
        (frame(b"x" * 11), RESOURCE_EXHAUSTED, "Received message larger than max (11 vs. 10)"),
        (b"\x01" + frame(b"abc")[1:], INTERNAL, "without a grpc-encoding"),
        (b"\x02" + frame(b"abc")[1:], INTERNAL, "without a grpc-encoding"),
    ],
)
def test_a_body_that_is_not_one_message_is_refused_saying_why(body: bytes, code: int, words: str) -> None:
    with pytest.raises(WireError) as info:
        unframe(body, None, 10)
    assert info.value.code == code and words in str(info.value)


@pytest.mark.parametrize(("encoding", "compress"), [(b"gzip", gzip.compress), (b"deflate", zlib.compress)])
def test_compressed_messages_are_inflated_within_the_limit(encoding: bytes, compress: object) -> None:
    assert callable(compress)
    squeezed = compress(b"a" * 100)
    assert unframe(b"\x01" + frame(squeezed)[1:], encoding, 100) == b"a" * 100
    # A small message that inflates past the limit stops at the limit, as a too large one.
    with pytest.raises(WireError) as info:
        unframe(b"\x01" + frame(squeezed)[1:], encoding, 99)
    assert info.value.code == RESOURCE_EXHAUSTED and "larger than max (100 vs. 99)" in str(info.value)
    with pytest.raises(WireError, match="does not decompress"):
        unframe(b"\x01" + frame(b"not compressed")[1:], encoding, 100)


def test_an_unknown_compression_is_unimplemented() -> None:
    with pytest.raises(WireError) as info:
        unframe(b"\x01" + frame(b"abc")[1:], b"snappy", 10)
    assert info.value.code == UNIMPLEMENTED and "'snappy'" in str(info.value)


@pytest.mark.parametrize(
    ("value", "seconds"),
    [(b"1H", 3600.0), (b"2M", 120.0), (b"3S", 3.0), (b"100m", 0.1), (b"250u", 250e-6), (b"99999999n", 0.099999999)],
)
def test_grpc_timeout_in_each_unit(value: bytes, seconds: float) -> None:
    assert timeout_seconds(value) == pytest.approx(seconds)


@pytest.mark.parametrize("value", [b"", b"S", b"10", b"10x", b"-1S", b"123456789S", b"1.5S"])
def test_a_grpc_timeout_that_is_not_one_is_ignored(value: bytes) -> None:
    assert timeout_seconds(value) is None


def test_grpc_message_is_percent_encoded_beyond_printable_ascii() -> None:
    assert percent_encoded("input 'x': shape [1, 2]") == b"input 'x': shape [1, 2]"
    assert percent_encoded("100% sure\nnext") == b"100%25 sure%0Anext"
    assert percent_encoded("café") == b"caf%C3%A9"


def test_status_trailers_carry_code_message_and_metadata() -> None:
    assert Status(0).trailers() == [(b"grpc-status", b"0")]
    trailers = Status(14, "overloaded", (("retry-after", "1"),)).trailers()
    assert trailers == [(b"grpc-status", b"14"), (b"grpc-message", b"overloaded"), (b"retry-after", b"1")]
