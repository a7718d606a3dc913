"""When requests are sent and to which model: closed or open loop, Poisson or constant arrivals, the mix.

Pure policy. Closed loop: each of ``concurrency`` connections sends its next request as soon as
its previous answer arrives. Open loop (MLPerf's "Server" scenario): requests are scheduled at
``rate`` per second whatever the answers do, so a slow server meets a growing queue instead of a
politely waiting client; latency is then counted from each request's scheduled time.

Gaps and model choices are drawn up front (seeded, so two runs send the same sequence) and the
request path only reads the next element.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np

from ..errors import UsageError

Arrivals = Literal["poisson", "constant"]
ARRIVALS: tuple[Arrivals, ...] = ("poisson", "constant")
DRAWN = 1 << 16  # gaps and choices drawn up front, then reused in a cycle


@dataclass(frozen=True, slots=True)
class Level:
    """One load level: ``concurrency`` connections in closed loop, or ``rate`` requests/s in open loop."""

    concurrency: int | None = None
    rate: float | None = None
    arrivals: Arrivals = "poisson"

    def __post_init__(self) -> None:
        if (self.concurrency is None) == (self.rate is None):
            raise UsageError("a load level is either a concurrency (closed loop) or a rate (open loop)")
        if self.concurrency is not None and self.concurrency < 1:
            raise UsageError(f"concurrency must be at least 1, got {self.concurrency}")
        if self.rate is not None and not self.rate > 0:
            raise UsageError(f"rate must be positive, got {self.rate}")
        if self.arrivals not in ARRIVALS:
            raise UsageError(f"arrivals must be one of {', '.join(ARRIVALS)}, got {self.arrivals!r}")

    @property
    def label(self) -> str:
        if self.concurrency is not None:
            return f"c{self.concurrency}"
        return f"{self.rate:g}/s {self.arrivals}"


def gaps(rate: float, arrivals: Arrivals, count: int = DRAWN, seed: int = 0) -> np.ndarray:
    """Seconds between consecutive scheduled sends: exponential (Poisson process) or constant."""
    if arrivals == "constant":
        return np.full(count, 1.0 / rate)
    return np.random.default_rng(seed).exponential(1.0 / rate, count)


def parse_mix(spec: str | None, models: int) -> tuple[float, ...]:
    """Shares of the models: ``zipf:S`` (the k-th model gets 1/k^S), ``weights:5,3,2``, or equal."""
    if models < 1:
        raise UsageError("a mix needs at least one model")
    if spec is None or spec == "uniform":
        return tuple([1.0 / models] * models)
    kind, _, value = spec.partition(":")
    try:
        if kind == "zipf":
            s = float(value)
            raw = [1.0 / (k**s) for k in range(1, models + 1)]
        elif kind == "weights":
            raw = [float(w) for w in value.split(",")]
            if len(raw) != models:
                raise UsageError(f"--mix {spec}: {len(raw)} weights for {models} models", hint="one weight per model")
        else:
            raise ValueError(kind)
    except ValueError:
        raise UsageError(f"--mix {spec!r} is not understood", hint="use zipf:1.1, weights:5,3,2 or uniform") from None
    if any(w < 0 for w in raw) or sum(raw) <= 0:
        raise UsageError(f"--mix {spec}: weights must be non-negative and not all zero")
    total = sum(raw)
    return tuple(w / total for w in raw)


def choices(shares: tuple[float, ...], count: int = DRAWN, seed: int = 1) -> np.ndarray:
    """Which model each request goes to, drawn by ``shares`` (indices into the model list)."""
    if len(shares) == 1:
        return np.zeros(count, np.int64)
    return np.random.default_rng(seed).choice(len(shares), size=count, p=np.asarray(shares))
