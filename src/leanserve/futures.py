"""The one adapter from leanserve's result callbacks to an awaitable.

The request path passes plain callbacks ``done(result, error)`` rather than futures: each future
hop costs an event-loop turn per request. Async callers wrap a callback-taking call here.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import TypeVar

from .errors import LeanserveError

T = TypeVar("T")
ResultCallback = Callable[[T | None, LeanserveError | None], None]


def call_as_future(start: Callable[[ResultCallback[T]], None]) -> asyncio.Future[T]:
    """Run ``start(done)`` and return a future that ``done(result, error)`` completes (once)."""
    future: asyncio.Future[T] = asyncio.get_running_loop().create_future()

    def done(result: T | None, error: LeanserveError | None) -> None:
        if future.done():
            return
        if error is not None:
            future.set_exception(error)
        else:
            future.set_result(result)  # type: ignore[arg-type]

    start(done)
    return future


__all__ = ["ResultCallback", "call_as_future"]
