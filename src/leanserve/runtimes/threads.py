"""How many threads an engine runs a model on, and whether they spin: chosen from the model's measured cost.

A model that leaves ``intra_op_threads`` out of model.toml gets threads chosen here rather than
ONNX Runtime's default (one thread per core, idle workers spinning). That default suits a heavy
model alone on a machine and hurts a light one: measured on the 2-core reference machine, the
tiny MLP served with the default reached 0.38x the limit server's throughput against 0.50x with
one thread, because the second thread spins on the core that the event loop, the load and the
kernel need; and all-MiniLM-L6-v2 with spinning workers answered at a p50 of 110 ms on a loaded
machine against 47-56 ms without.

The policy is pure, so that it is tested without an engine; :mod:`leanserve.check` measures the
cost at load and applies it.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Final

# A one-row run measured under this (with every core's thread) gets one thread: splitting work this
# small across threads costs more in wake-ups and hand-offs than it saves.
LIGHT_SECONDS: Final = 0.001


@dataclass(frozen=True, slots=True)
class ThreadPlan:
    threads: int
    spinning: bool
    reason: str


def available_cores() -> int:
    """The cores this process may run on (its affinity, as a container's CPU set limits it)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):
        return max(1, os.cpu_count() or 1)


def plan_threads(cost_seconds: float | None, cores: int, threads: int = 0, spinning: bool | None = None) -> ThreadPlan:
    """The threads and spinning for a model whose one-row run took ``cost_seconds`` (None: not measured yet).

    ``threads`` (non-zero) and ``spinning`` (not None) are the user's own settings, kept as given.
    A light model gets one thread. Any other gets every core but one for the event loop, except on
    a machine of one or two cores, where it gets them all. Workers spin only when a core is left
    over for the event loop: spinning on the cores it needs delays every answer.
    """
    reason = "set in model.toml"
    if threads <= 0:
        if cost_seconds is not None and cost_seconds < LIGHT_SECONDS:
            threads = 1
            reason = f"a one-row run takes {cost_seconds * 1e3:.3f} ms: light, one thread"
        else:
            threads = cores if cores <= 2 else cores - 1
            measured = "not measured yet"
            if cost_seconds is not None:
                measured = f"a one-row run takes {cost_seconds * 1e3:.1f} ms"
            reason = f"{measured}: {threads} of {cores} cores"
    if spinning is None:
        spinning = threads > 1 and cores - threads >= 1
    return ThreadPlan(threads, spinning, reason)


__all__ = ["LIGHT_SECONDS", "ThreadPlan", "available_cores", "plan_threads"]
