"""Measurement: latency with warm-up and repeated rounds, peak memory, energy, environment.

Every figure here comes from a run on this machine. Where a counter does not exist (no RAPL,
no NVML), the figure is ``None`` with a note saying so; nothing is ever estimated.
"""

from __future__ import annotations

import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path

import numpy as np

from ..config import RuntimeOptions
from ..errors import ServerError
from ..runtimes import Runtime

NOT_MEASURABLE = "not measurable here"
_PEAK_TIMEOUT_S = 600
_RAPL = Path("/sys/class/powercap")


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


@dataclass(frozen=True, slots=True)
class Energy:
    joules_per_inference: float | None
    source: str  # "intel-rapl", "nvml", or NOT_MEASURABLE


@dataclass(frozen=True, slots=True)
class Environment:
    cpu_model: str
    logical_cores: int  # in the machine
    usable_cores: int  # this process may run on (its affinity mask): what the thread sweep tries
    cpu_flags: tuple[str, ...]
    machine: str
    python: str
    libraries: dict[str, str] = field(default_factory=dict)


def time_runs(run: Callable[[], object], batch_size: int, settings: Settings) -> Latency:
    """Warm up, then ``rounds`` rounds of ``runs_per_round`` timed calls."""
    for _ in range(settings.warmup):
        run()
    samples: list[float] = []
    medians: list[float] = []
    for _ in range(settings.rounds):
        this_round: list[float] = []
        for _ in range(settings.runs_per_round):
            t0 = time.perf_counter()
            run()
            this_round.append((time.perf_counter() - t0) * 1000.0)
        medians.append(statistics.median(this_round))
        samples.extend(this_round)
    arr = np.asarray(samples)
    return Latency(
        batch_size=batch_size,
        p50_ms=float(np.percentile(arr, 50)),
        p99_ms=float(np.percentile(arr, 99)),
        mean_ms=float(arr.mean()),
        rounds_ms=Spread(min(medians), statistics.median(medians), max(medians)),
        runs=len(samples),
        warmup=settings.warmup,
    )


def time_for(run: Callable[[], object], seconds: float, min_runs: int = 3) -> float:
    """Median milliseconds of ``run`` repeated for about ``seconds`` (one warm-up call first)."""
    run()
    samples: list[float] = []
    deadline = time.perf_counter() + seconds
    while len(samples) < min_runs or time.perf_counter() < deadline:
        t0 = time.perf_counter()
        run()
        samples.append((time.perf_counter() - t0) * 1000.0)
    return statistics.median(samples)


def runner(runtime: Runtime, feed: Mapping[str, np.ndarray]) -> Callable[[], object]:
    return lambda: runtime.run(feed)


# ---- memory --------------------------------------------------------------------------------


_PEAK_SCRIPT = """
import sys, numpy as np
from pathlib import Path
def kb(key):
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1])
from leanserve.config import RuntimeOptions
from leanserve.runtimes import load_runtime
path, platform, threads, providers, feed = sys.argv[1:6]
options = RuntimeOptions(intra_op_threads=int(threads), providers=tuple(p for p in providers.split(",") if p))
batch = dict(np.load(feed))
before = kb("VmRSS")
runtime = load_runtime(Path(path), platform, options)
runtime.run(batch)
print(kb("VmHWM") - before)
"""


def peak_memory(path: Path, platform: str, options: RuntimeOptions, feed: Mapping[str, np.ndarray]) -> float | None:
    """Peak memory in MiB of loading ``path`` and running ``feed`` once, in a fresh process.

    A fresh process, because in this one the allocator reuses what earlier variants freed and
    the peak would read near zero. The figure is the process's peak RSS minus its RSS after the
    imports: the engine, the weights and the arena of one batch. None where /proc is missing;
    ServerError, with the process's stderr, when the process crashes.
    """
    if not Path("/proc/self/status").exists():
        return None
    with tempfile.TemporaryDirectory(prefix="leanserve-mem-") as tmp:
        np.savez(Path(tmp) / "feed.npz", **dict(feed))  # type: ignore[arg-type]
        args = [
            str(path),
            platform,
            str(options.intra_op_threads),
            ",".join(options.providers),
            str(Path(tmp) / "feed.npz"),
        ]
        where = f"measuring the peak memory of {path}"
        try:
            done = subprocess.run(
                [sys.executable, "-c", _PEAK_SCRIPT, *args], capture_output=True, text=True, timeout=_PEAK_TIMEOUT_S
            )
        except subprocess.TimeoutExpired:
            raise ServerError(f"{where} did not finish within {_PEAK_TIMEOUT_S} s") from None
    # A crash is the variant's (or leanserve's) failure, never a figure that cannot be measured.
    if done.returncode < 0:
        raise ServerError(
            f"{where} crashed, killed by signal {-done.returncode}; its stderr: {_tail(done.stderr)}",
            hint="a process killed by signal 9 has usually run out of memory",
        )
    if done.returncode != 0:
        raise ServerError(f"{where} crashed with exit code {done.returncode}; its stderr: {_tail(done.stderr)}")
    try:
        return int(done.stdout.strip().splitlines()[-1]) / 1024.0
    except (ValueError, IndexError):
        raise ServerError(f"{where} printed no figure; its stdout: {_tail(done.stdout)}") from None


def _tail(text: str, lines: int = 12) -> str:
    """The end of a process's output, where a traceback says what went wrong."""
    return "\n".join(text.strip().splitlines()[-lines:])[-2000:] or "(no output)"


# ---- energy --------------------------------------------------------------------------------


def _rapl_files() -> list[Path]:
    if not _RAPL.is_dir():
        return []
    # Package domains only (intel-rapl:0, intel-rapl:1); sub-domains are counted inside them.
    return sorted(p / "energy_uj" for p in _RAPL.glob("intel-rapl:*") if p.name.count(":") == 1)


def _read_uj(files: list[Path]) -> int | None:
    try:
        return sum(int(f.read_text()) for f in files)
    except (OSError, ValueError):
        return None  # present but not readable (root-only on recent kernels)


def energy_per_inference(run: Callable[[], object], inferences_per_run: int, seconds: float) -> Energy:
    """Joules per inference from the RAPL package counters over ``seconds`` of runs."""
    files = _rapl_files()
    start = _read_uj(files) if files else None
    if start is None:
        return Energy(None, NOT_MEASURABLE)
    runs = 0
    deadline = time.perf_counter() + seconds
    while time.perf_counter() < deadline or runs == 0:
        run()
        runs += 1
    end = _read_uj(files)
    if end is None or end <= start:  # a wrapped counter: better no figure than a wrong one
        return Energy(None, NOT_MEASURABLE)
    # The package counter includes everything else the machine did meanwhile; say so by source.
    return Energy((end - start) / 1e6 / (runs * inferences_per_run), "intel-rapl (whole package)")


# ---- environment ---------------------------------------------------------------------------

_FLAGS_OF_INTEREST = ("avx2", "avx512f", "avx512_vnni", "avx512_bf16", "amx_tile", "amx_int8", "amx_bf16")


def usable_cores() -> int:
    """The cores this process may run on: fewer than the machine's in a container or under taskset."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # no affinity mask outside Linux
        return os.cpu_count() or 1


def environment() -> Environment:
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
    libraries = {}
    for dist in ("leanserve", "onnxruntime", "onnx", "openvino", "nncf", "numpy", "torch"):
        try:
            libraries[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            continue
    return Environment(
        cpu_model=model,
        logical_cores=os.cpu_count() or 1,
        usable_cores=usable_cores(),
        cpu_flags=tuple(f for f in _FLAGS_OF_INTEREST if f in flags),
        machine=f"{platform.system()} {platform.release()} {platform.machine()}",
        python=platform.python_version(),
        libraries=libraries,
    )


def file_size(paths: tuple[Path, ...]) -> int:
    return sum(p.stat().st_size for p in paths)
