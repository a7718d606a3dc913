"""How the workers of ``serve --workers N`` see each other's metrics: one Unix socket per worker.

Each worker listens on ``<dir>/<index>.sock`` and, to whoever connects, writes its own text
exposition and closes. The worker that a scrape of ``/metrics`` reaches reads every other socket
in the folder and adds the expositions up (:mod:`.metrics_merge`). Nothing is shared on the
request path: a scrape pays for the merge, a request pays nothing. A worker that is restarting
has no socket yet, or a dead one, and is left out of that scrape (``leanserve_workers_scraped``
says how many answered).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from pathlib import Path
from typing import Final

from prometheus_client import CONTENT_TYPE_LATEST

from .metrics_merge import render_merged

log = logging.getLogger("leanserve.server")

SOCKET_SUFFIX: Final = ".sock"
# A sibling that does not answer in this time is left out of the scrape: a scrape must not hang
# on a worker that is stuck or being replaced.
READ_TIMEOUT_S: Final = 2.0


def socket_path(directory: Path, index: int) -> Path:
    return directory / f"{index}{SOCKET_SUFFIX}"


async def read_exposition(path: Path, timeout: float = READ_TIMEOUT_S) -> str:
    """One worker's exposition, read from its socket."""

    async def read() -> bytes:
        reader, writer = await asyncio.open_unix_connection(str(path))
        try:
            return await reader.read()
        finally:
            writer.close()

    return (await asyncio.wait_for(read(), timeout)).decode()


class Siblings:
    """This worker's socket, and the merged exposition of every worker whose socket answers."""

    def __init__(self, directory: Path, index: int, own: Callable[[], tuple[bytes, bytes]]) -> None:
        self.directory = directory
        self.index = index
        self._own = own
        self._server: asyncio.AbstractServer | None = None

    @property
    def path(self) -> Path:
        return socket_path(self.directory, self.index)

    async def start(self) -> None:
        self.directory.mkdir(parents=True, exist_ok=True)
        with contextlib.suppress(FileNotFoundError):
            self.path.unlink()  # left by the worker this one replaces
        self._server = await asyncio.start_unix_server(self._answer, path=str(self.path))

    async def _answer(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            writer.write(self._own()[0])
            await writer.drain()
        except (ConnectionError, OSError):
            pass
        finally:
            writer.close()

    async def merged(self) -> tuple[bytes, bytes]:
        """(body, content type) of /metrics: every worker's exposition added up."""
        others = sorted(p for p in self.directory.glob(f"*{SOCKET_SUFFIX}") if p != self.path)
        results = await asyncio.gather(*(read_exposition(p) for p in others), return_exceptions=True)
        texts = [self._own()[0].decode()]
        for path, result in zip(others, results, strict=True):
            if isinstance(result, BaseException):
                log.debug("worker socket %s did not answer (%s): left out of this scrape", path, result)
            else:
                texts.append(result)
        # The parse and merge take milliseconds for a large repository: off the loop, so requests
        # other connections are waiting on are not held up by a scrape.
        body = await asyncio.to_thread(render_merged, texts, len(texts))
        return body, CONTENT_TYPE_LATEST.encode()

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._server.wait_closed(), 1.0)
            self._server = None
        with contextlib.suppress(FileNotFoundError):
            self.path.unlink()
