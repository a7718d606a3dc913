"""Measurement: peak memory and energy (latency loops and the environment are leanserve.timing's).

Every figure here comes from a run on this machine. Where a counter does not exist (no RAPL,
no NVML), the figure is ``None`` with a note saying so; nothing is ever estimated.
"""

from __future__ import annotations

import subprocess
import sys
import tempfile
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..config import RuntimeOptions
from ..errors import ServerError
from ..runtimes import Runtime
from ..timing import now

NOT_MEASURABLE = "not measurable here"
_PEAK_TIMEOUT_S = 600
_RAPL = Path("/sys/class/powercap")


@dataclass(frozen=True, slots=True)
class Energy:
    joules_per_inference: float | None
    source: str  # "intel-rapl", "nvml", or NOT_MEASURABLE


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
    deadline = now() + seconds
    while now() < deadline or runs == 0:
        run()
        runs += 1
    end = _read_uj(files)
    if end is None or end <= start:  # a wrapped counter: better no figure than a wrong one
        return Energy(None, NOT_MEASURABLE)
    # The package counter includes everything else the machine did meanwhile; say so by source.
    return Energy((end - start) / 1e6 / (runs * inferences_per_run), "intel-rapl (whole package)")


def file_size(paths: tuple[Path, ...]) -> int:
    return sum(p.stat().st_size for p in paths)
