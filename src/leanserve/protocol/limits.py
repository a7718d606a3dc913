"""Bounds on what one inference request may make the server parse and allocate."""

from __future__ import annotations

import math
from dataclasses import dataclass, fields

from ..errors import PayloadTooLarge, UsageError


@dataclass(frozen=True, slots=True)
class Limits:
    max_body_bytes: int = 64 * 1024 * 1024
    # Applies to the ``parameters`` objects, the only free-form JSON a request carries; orjson
    # itself refuses documents nested deeper than 1024 levels, and nested tensor data can be no
    # deeper than its declared shape.
    max_json_depth: int = 32
    max_tensor_elements: int = 16_777_216
    max_inputs: int = 256  # also the most requested outputs
    max_bytes_element: int = 16 * 1024 * 1024  # longest BYTES element (binary or JSON), in bytes
    # The HTTP front end's (server/http.py): what one request head may hold, how many parsed
    # requests one connection may have waiting (reading pauses beyond it: backpressure), and how
    # long a client may take, so that slow or idle sockets cannot hold the server's connections.
    max_url_bytes: int = 8 * 1024
    max_header_bytes: int = 64 * 1024
    max_pipelined: int = 64
    header_timeout_s: int = 10  # from a request's first byte to the end of its head
    body_timeout_s: int = 30  # longest pause between two pieces of a body
    idle_timeout_s: int = 75  # a kept-alive connection with no request in progress

    def __post_init__(self) -> None:
        for f in fields(self):
            value = getattr(self, f.name)
            if type(value) is not int or value < 1:
                raise UsageError(f"Limits.{f.name} must be a positive integer, got {value!r}")


def declared_elements(where: str, shape: tuple[int, ...], max_elements: int) -> int:
    """The number of elements ``shape`` declares, refusing dimensions no array could have.

    A zero anywhere makes the count 0, but numpy still refuses ``[2**62, 0]`` (the other dimensions
    overflow its sizes) with a ValueError that once escaped the codecs and left the connection
    unanswered: such dimensions are bounded by the elements limit too.
    """
    count = math.prod(shape)
    if count == 0 and len(shape) > 1:
        nonzero = math.prod(d for d in shape if d)
        if nonzero > max_elements:
            raise PayloadTooLarge(
                f"{where}: shape {list(shape)} has dimensions whose product ({nonzero}) exceeds the limit of "
                f"{max_elements} elements per tensor",
                hint="send a real shape",
            )
    return count


def check_bytes_elements(where: str, data: object, max_bytes: int) -> None:
    """Refuse (413) a BYTES tensor with an element longer than ``max_bytes``."""
    for i, item in enumerate(getattr(data, "flat", ())):
        if len(item) > max_bytes:
            raise PayloadTooLarge(
                f"{where}: BYTES element {i} is {len(item)} bytes long, over the limit of {max_bytes}",
                hint="send large payloads in several requests, or raise Limits.max_bytes_element",
            )


def too_many_elements(where: str, count: int, max_elements: int) -> PayloadTooLarge:
    """The error for a tensor whose declared shape holds more than ``max_tensor_elements``.

    Every codec checks the count from the declared shape before it allocates anything.
    """
    return PayloadTooLarge(
        f"{where}: {count} elements exceed the limit of {max_elements} per tensor",
        hint="split the request into smaller ones",
    )
