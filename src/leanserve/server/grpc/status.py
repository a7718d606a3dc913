"""leanserve's errors as gRPC status codes: the one translation, as Triton maps its own.

The code follows the error's HTTP status, so that a request refused over HTTP with 404 is
refused over gRPC with ``NOT_FOUND``, with the same message (``str(error)``: the message and its
hint). Triton answers a request that is too large with ``INVALID_ARGUMENT`` (its core has no
code for size); leanserve answers ``RESOURCE_EXHAUSTED``, the code gRPC libraries give a message
over ``grpc.max_receive_message_length``, so that "too large" reads the same whichever layer
catches it.
"""

from __future__ import annotations

from typing import Final

import grpc

from ...errors import LeanserveError

_BY_HTTP_STATUS: Final[dict[int, grpc.StatusCode]] = {
    400: grpc.StatusCode.INVALID_ARGUMENT,
    401: grpc.StatusCode.UNAUTHENTICATED,
    403: grpc.StatusCode.PERMISSION_DENIED,
    404: grpc.StatusCode.NOT_FOUND,
    405: grpc.StatusCode.UNIMPLEMENTED,
    413: grpc.StatusCode.RESOURCE_EXHAUSTED,
    415: grpc.StatusCode.INVALID_ARGUMENT,
    500: grpc.StatusCode.INTERNAL,
    503: grpc.StatusCode.UNAVAILABLE,
    504: grpc.StatusCode.DEADLINE_EXCEEDED,
}

Metadata = tuple[tuple[str, str], ...]


def status_code(error: LeanserveError) -> grpc.StatusCode:
    """The gRPC code for ``error``; a status without its own code maps by class (4xx, 5xx)."""
    code = _BY_HTTP_STATUS.get(error.status)
    if code is not None:
        return code
    return grpc.StatusCode.INTERNAL if error.status >= 500 else grpc.StatusCode.INVALID_ARGUMENT


def trailing_metadata(error: LeanserveError) -> Metadata:
    """What HTTP sends as headers beside the error: ``retry-after`` (seconds) when the error has one."""
    if error.retry_after is None:
        return ()
    return (("retry-after", str(error.retry_after)),)


__all__ = ["Metadata", "status_code", "trailing_metadata"]
