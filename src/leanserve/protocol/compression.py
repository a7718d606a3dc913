"""Compressed request bodies (tritonclient's ``request_compression_algorithm``), inflated within a limit."""

from __future__ import annotations

import zlib

from ..errors import InvalidInput, PayloadTooLarge, UnsupportedMediaType


def decompress(body: bytes, encoding: str, limit: int) -> bytes:
    """A gzip or deflate body, never inflated past ``limit`` bytes (a zip bomb is a 413, not an allocation)."""
    encoding = encoding.strip().lower()
    if encoding == "identity":
        return body
    if encoding not in ("gzip", "deflate"):
        raise UnsupportedMediaType(f"Content-Encoding {encoding!r} is not supported", hint="use gzip, deflate or none")
    inflater = zlib.decompressobj(wbits=31 if encoding == "gzip" else 15)
    try:
        data = inflater.decompress(body, limit + 1)
    except zlib.error as e:
        raise InvalidInput(f"request body is not valid {encoding} data: {e}") from None
    if len(data) > limit or inflater.unconsumed_tail:
        raise PayloadTooLarge(f"decompressed request body exceeds the limit of {limit} bytes")
    return data
