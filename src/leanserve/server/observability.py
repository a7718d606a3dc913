"""What a server keeps about itself beside its metrics: the failure log and the dashboard's samples.

Started with the server (before the first request, so that no failure goes unlogged) and stopped
after it (so that the failures of its last requests are written).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import sqlite3
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from ..dashboard import Sampler
from ..errors import UsageError
from ..failures import DEFAULT_MAX_ENTRIES, FILE_NAME, FailureLog
from ..registry import ModelRegistry
from ..router import Router

log = logging.getLogger("leanserve.server")

STATE_DIR: Final = ".leanserve"  # inside the repository; the scan skips folders starting with '.'


@dataclass(frozen=True, slots=True)
class ObservabilityOptions:
    state_dir: Path | None = None  # None: <repository>/.leanserve
    failure_log_entries: int = DEFAULT_MAX_ENTRIES  # oldest dropped past this; 0: no failure log
    sample_seconds: float = 2.0  # how often the dashboard's series take a sample

    def __post_init__(self) -> None:
        if self.failure_log_entries < 0:
            raise UsageError(f"failure_log_entries must be 0 (no log) or more, not {self.failure_log_entries}")
        if self.sample_seconds <= 0:
            raise UsageError(f"sample_seconds must be positive, not {self.sample_seconds}")


class Observability:
    def __init__(self, registry: ModelRegistry, router: Router, options: ObservabilityOptions | None = None) -> None:
        self.options = options or ObservabilityOptions()
        self.state_dir = self.options.state_dir or registry.repository / STATE_DIR
        self.sampler = Sampler(registry, self.options.sample_seconds)
        self.failures: FailureLog | None = None
        self._router = router
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        """Open the failure log, hook it into the router and start sampling (on the serving loop)."""
        entries = self.options.failure_log_entries
        if entries:
            path = self.state_dir / FILE_NAME
            failures = FailureLog(path, entries)
            try:
                failures.open()
            except (OSError, sqlite3.Error) as e:
                # A read-only repository or a damaged file must not keep the models from serving.
                log.warning("cannot open the failure log %s (%s): failures are kept in memory only", path, e)
                failures = FailureLog(None, entries)
                failures.open()
            self.failures = failures
            self._router.on_failure = failures.record
        self._task = asyncio.get_running_loop().create_task(self.sampler.run())

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        if self.failures is not None:
            self._router.on_failure = None
            failures, self.failures = self.failures, None
            await asyncio.to_thread(failures.close)


__all__ = ["STATE_DIR", "Observability", "ObservabilityOptions"]
