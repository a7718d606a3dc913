"""How many threads an engine runs a model on, and how its idle workers wait: chosen from the model's measured cost.

A model that leaves ``intra_op_threads`` out of model.toml gets threads chosen here rather than
ONNX Runtime's default (one thread per core, idle workers spinning). That default suits a heavy
model alone on a machine and hurts a light one: measured on the 2-core reference machine, the
tiny MLP served with the default reached 0.38x the limit server's throughput against 0.50x with
one thread, because the second thread spins on the core that the event loop, the load and the
kernel need; and all-MiniLM-L6-v2 with spinning workers answered at a p50 of 110 ms on a loaded
machine against 47-56 ms without.

Between spinning without end and not spinning at all lies a short spin
(``session.intra_op.spin_duration_us``): an idle worker spins a few tens of microseconds, then
sleeps. Within one run a model's parallel sections follow each other closer than that, so the
worker catches each without a futex wake-up; between two requests (the event loop answers, the
client sends, the loop decodes: a millisecond or more) it sleeps and leaves the core to them.
Measured on the 2-core machine with all-MiniLM-L6-v2 (2 threads, 128 tokens, in process, settings
alternating round by round; benchmarks/engine_threads.py): with sleeping workers a one-row run made
~350 futex calls and took a median of 20.5 ms on a quiet machine, 31 ms under other helpers' load;
with a 50 us spin ~25 futex calls, 19.1 ms and 19.0 ms (ONNX Runtime's own spin: 19.3 and 21 ms).
Where the machine was busy, the endless spin fell to 20 items/s at batch 32 while the short spin
kept 44-48 like sleeping workers, and it used no more CPU per run than they did.

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

# How long an idle worker spins before it sleeps where no core is left over for the event loop.
SHORT_SPIN_MICROSECONDS: Final = 50


@dataclass(frozen=True, slots=True)
class ThreadPlan:
    threads: int
    spinning: bool  # idle workers spin before they sleep
    reason: str
    # How long they spin, microseconds; None: ONNX Runtime's own spin (thousands of iterations).
    spin_microseconds: int | None = None


def available_cores() -> int:
    """The cores this process may run on (its affinity, as a container's CPU set limits it)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):
        return max(1, os.cpu_count() or 1)


def plan_threads(cost_seconds: float | None, cores: int, threads: int = 0, spinning: bool | None = None) -> ThreadPlan:
    """The threads and spinning for a model whose one-row run took ``cost_seconds`` (None: not measured yet).

    ``threads`` (non-zero) and ``spinning`` (not None) are the user's own settings, kept as given
    (``spinning`` true: ONNX Runtime's own spin). A light model gets one thread. Any other gets
    every core but one for the event loop, except on a machine of one or two cores, where it gets
    them all. Left to the policy, workers spin ONNX Runtime's way when a core is left over for the
    event loop, and spin briefly (:data:`SHORT_SPIN_MICROSECONDS`) when none is: long enough to
    catch the next parallel section of a run, too short to hold a core the event loop needs between runs.
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
    if spinning is not None or threads <= 1:
        return ThreadPlan(threads, bool(spinning), reason)
    if cores - threads >= 1:
        return ThreadPlan(threads, True, reason)
    spin = SHORT_SPIN_MICROSECONDS
    return ThreadPlan(threads, True, f"{reason}; no core to spare: idle workers spin {spin} us, then sleep", spin)


__all__ = ["LIGHT_SECONDS", "SHORT_SPIN_MICROSECONDS", "ThreadPlan", "available_cores", "plan_threads"]
