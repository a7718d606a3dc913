"""Timing primitives shared by ``optimize``, ``bench`` and ``benchmarks/``: the clocks, percentiles,
warm-up and repeat loops, the process's CPU use, and the machine a figure was measured on.

One place, so that a p99 means the same thing in an optimize report, a ``leanserve bench`` run and
a benchmark's table.
"""

from __future__ import annotations

import os
import platform
import resource
import statistics
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path

import numpy as np

from .runtimes.threads import available_cores

# The one clock for durations: monotonic, sub-microsecond, comparable across threads of a process.
now = time.perf_counter


def cpu_seconds() -> float:
    """CPU time (user + system) this process has used, all its threads together."""
    return time.process_time()


def thread_cpu_seconds(pid: int) -> dict[int, float]:
    """CPU time (user + system) each thread of process ``pid`` has used, by thread id (Linux /proc).

    What a server's event loop, its engine thread and the engine's workers each cost per request,
    read from outside it. Empty where /proc is missing; a thread that ends while being read is left out.
    """
    tick = os.sysconf("SC_CLK_TCK")
    used: dict[int, float] = {}
    try:
        tasks = list(Path(f"/proc/{pid}/task").iterdir())
    except OSError:
        return used
    for task in tasks:
        try:
            fields = (task / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        used[int(task.name)] = (int(fields[11]) + int(fields[12])) / tick  # utime + stime, in ticks
    return used


def percentiles(values: Sequence[float] | np.ndarray, qs: Iterable[float]) -> list[float]:
    """Percentiles (0-100) of ``values`` by linear interpolation (numpy's default); NaN when empty."""
    arr = np.asarray(values, dtype=np.float64)
    qs = list(qs)
    if arr.size == 0:
        return [float("nan")] * len(qs)
    return [float(x) for x in np.percentile(arr, qs)]


def percentile(values: Sequence[float] | np.ndarray, q: float) -> float:
    return percentiles(values, [q])[0]


# ---- repeat loops ----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Settings:
    warmup: int = 5
    rounds: int = 5
    runs_per_round: int = 20
    sweep_seconds: float = 0.25  # per (threads, batch) point

    @classmethod
    def quick(cls) -> Settings:
        return cls(warmup=2, rounds=3, runs_per_round=8, sweep_seconds=0.08)


@dataclass(frozen=True, slots=True)
class Spread:
    min: float
    median: float
    max: float


@dataclass(frozen=True, slots=True)
class Latency:
    batch_size: int
    p50_ms: float
    p99_ms: float
    mean_ms: float
    rounds_ms: Spread  # min / median / max of the per-round medians
    runs: int
    warmup: int


def timed_calls(run: Callable[[], object], count: int) -> list[float]:
    """Milliseconds of each of ``count`` calls of ``run``."""
    samples: list[float] = []
    for _ in range(count):
        t0 = now()
        run()
        samples.append((now() - t0) * 1000.0)
    return samples


def time_runs(run: Callable[[], object], batch_size: int, settings: Settings) -> Latency:
    """Warm up, then ``rounds`` rounds of ``runs_per_round`` timed calls."""
    for _ in range(settings.warmup):
        run()
    samples: list[float] = []
    medians: list[float] = []
    for _ in range(settings.rounds):
        this_round = timed_calls(run, settings.runs_per_round)
        medians.append(statistics.median(this_round))
        samples.extend(this_round)
    p50, p99 = percentiles(samples, (50, 99))
    return Latency(
        batch_size=batch_size,
        p50_ms=p50,
        p99_ms=p99,
        mean_ms=statistics.fmean(samples),
        rounds_ms=Spread(min(medians), statistics.median(medians), max(medians)),
        runs=len(samples),
        warmup=settings.warmup,
    )


def time_for(run: Callable[[], object], seconds: float, min_runs: int = 3) -> float:
    """Median milliseconds of ``run`` repeated for about ``seconds`` (one warm-up call first)."""
    run()
    samples: list[float] = []
    deadline = now() + seconds
    while len(samples) < min_runs or now() < deadline:
        samples.extend(timed_calls(run, 1))
    return statistics.median(samples)


# ---- CPU use ---------------------------------------------------------------------------------


@dataclass(slots=True)
class CpuMeter:
    """The process's CPU use between ``start`` and ``read``, as a fraction of one core.

    A load generator that reads near 1.0 is running out of its own core: what it measures is then
    partly itself.
    """

    wall: float = 0.0
    cpu: float = 0.0

    def start(self) -> None:
        self.wall, self.cpu = now(), cpu_seconds()

    def read(self) -> float:
        wall = now() - self.wall
        return (cpu_seconds() - self.cpu) / wall if wall > 0 else 0.0


def max_resident_mib() -> float:
    """This process's peak resident memory, MiB (Linux reports KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


# ---- where a figure was measured -------------------------------------------------------------

_FLAGS_OF_INTEREST = ("avx2", "avx512f", "avx512_vnni", "avx512_bf16", "amx_tile", "amx_int8", "amx_bf16")


@dataclass(frozen=True, slots=True)
class Environment:
    cpu_model: str
    logical_cores: int  # in the machine
    usable_cores: int  # this process may run on (its affinity mask): what the thread sweep tries
    cpu_flags: tuple[str, ...]
    machine: str
    python: str
    libraries: dict[str, str] = field(default_factory=dict)


def load_average() -> tuple[float, float, float] | None:
    """The 1, 5 and 15 minute load averages: how busy the machine was around a measurement."""
    try:
        return os.getloadavg()
    except OSError:
        return None


def environment(
    libraries: Sequence[str] = ("leanserve", "onnxruntime", "onnx", "openvino", "nncf", "numpy", "torch"),
) -> Environment:
    model, flags = platform.processor() or "unknown", set[str]()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            key, _, value = line.partition(":")
            if key.strip() == "model name":
                model = value.strip()
            elif key.strip() == "flags":
                flags = set(value.split())
    except OSError:
        pass
    versions = {}
    for dist in libraries:
        try:
            versions[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            continue
    return Environment(
        cpu_model=model,
        logical_cores=os.cpu_count() or 1,
        usable_cores=available_cores(),
        cpu_flags=tuple(f for f in _FLAGS_OF_INTEREST if f in flags),
        machine=f"{platform.system()} {platform.release()} {platform.machine()}",
        python=platform.python_version(),
        libraries=versions,
    )


__all__ = [
    "CpuMeter",
    "Environment",
    "Latency",
    "Settings",
    "Spread",
    "cpu_seconds",
    "environment",
    "load_average",
    "max_resident_mib",
    "now",
    "percentile",
    "percentiles",
    "thread_cpu_seconds",
    "time_for",
    "time_runs",
    "timed_calls",
]
