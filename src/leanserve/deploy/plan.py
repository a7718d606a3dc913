"""What a deployment asks of the cluster, from what was measured (pure functions).

The memory a pod requests is the server's own baseline plus what its models hold: the budget
when there is one (on-demand models fill it), else the measured size of every model. The limit
leaves headroom for request buffers and the allocator; a pod over its limit is killed, which is
worse than a 503. The startup probe waits as long as the slowest load measured here, three
times over, and at least a minute: a scaled-up pod stays out of the Service until its models
answer, and is not restarted for being slow to load.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Final

MIB: Final = 1 << 20
LIMIT_HEADROOM: Final = 1.25
PROBE_PERIOD_S: Final = 5
MIN_STARTUP_S: Final = 60.0


@dataclass(frozen=True, slots=True)
class Measured:
    """A repository as loaded here: the server without models, and each model's measured size."""

    baseline_bytes: int
    model_bytes: dict[str, int]  # model -> measured (or declared) bytes of its versions
    slowest_load_seconds: float


@dataclass(frozen=True, slots=True)
class Resources:
    memory_request: str  # Kubernetes quantities, e.g. "512Mi"
    memory_limit: str
    cpu_request: str


def mebibytes(n: int) -> str:
    return f"{max(1, math.ceil(n / MIB))}Mi"


def resources_for(measured: Measured, budget: int | None, cpus: float, workers: int = 1) -> Resources:
    """Requests and limits of one pod. Each worker process has its own baseline."""
    models = budget if budget is not None else sum(measured.model_bytes.values())
    need = measured.baseline_bytes * max(1, workers) + models
    cpu = f"{int(cpus * 1000)}m"
    return Resources(mebibytes(need), mebibytes(int(need * LIMIT_HEADROOM)), cpu)


def startup_failure_threshold(slowest_load_seconds: float) -> int:
    """Startup-probe failures allowed, at one probe every PROBE_PERIOD_S."""
    wait = max(MIN_STARTUP_S, 3 * slowest_load_seconds)
    return math.ceil(wait / PROBE_PERIOD_S)
