"""Progress reporting for the demo build: a callback for messages, and timed steps."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

Progress = Callable[[str], None]


def silent(message: str) -> None:
    """The default progress callback: says nothing."""


@dataclass
class StepTimes:
    """Seconds spent in each named step of one model's build, in the order they ran."""

    seconds: dict[str, float] = field(default_factory=dict)

    @contextmanager
    def step(self, progress: Progress, label: str) -> Iterator[None]:
        """Report ``label ...`` before the step and ``label: N s`` after it, recording N."""
        progress(f"{label} ...")
        start = time.perf_counter()
        yield
        elapsed = time.perf_counter() - start
        self.seconds[label] = round(elapsed, 3)
        progress(f"{label}: done in {elapsed:.1f} s")

    @property
    def total(self) -> float:
        return round(sum(self.seconds.values()), 3)
