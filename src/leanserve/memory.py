"""The process's memory: reading it as an operator's monitoring sees it, giving freed heap back, sizes.

A model's size is what loading it added to the process's resident set, measured, not declared:
ONNX Runtime allocates its arenas on the first run, so the registry measures across the load
*and* a warm-up at the largest batch (see :func:`leanserve.check.check_version`).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import re
from functools import cache

from .errors import UsageError

_UNITS = {"": 1, "B": 1, "KIB": 1 << 10, "MIB": 1 << 20, "GIB": 1 << 30, "TIB": 1 << 40}
_UNITS |= {"K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "KB": 1000, "MB": 1000**2, "GB": 1000**3}
_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([A-Za-z]*)\s*$")


def parse_size(text: str | int) -> int:
    """Bytes from ``"6GiB"``, ``"300MiB"``, ``"512KiB"``, ``"1000B"`` or a plain integer."""
    if isinstance(text, int) and not isinstance(text, bool):
        if text < 0:
            raise UsageError(f"a size cannot be negative: {text}")
        return text
    match = _SIZE.match(str(text))
    unit = match.group(2).upper() if match else None
    if match is None or unit not in _UNITS:
        raise UsageError(
            f"{text!r} is not a size", hint="write a number with B, KiB, MiB or GiB, for example 6GiB or 300MiB"
        )
    return int(float(match.group(1)) * _UNITS[unit])


def format_size(n: int) -> str:
    for unit, factor in (("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)):
        if abs(n) >= factor:
            return f"{n / factor:.1f} {unit}"
    return f"{n} B"


def resident_bytes(pid: int | str = "self") -> int:
    """Resident set size of a process, from /proc (0 where there is none)."""
    try:
        with open(f"/proc/{pid}/statm", "rb") as f:
            pages = int(f.read().split()[1])
    except (OSError, ValueError, IndexError):
        return 0
    return pages * os.sysconf("SC_PAGE_SIZE")


@cache
def _libc() -> ctypes.CDLL | None:
    name = ctypes.util.find_library("c")
    if name is None:
        return None
    try:
        libc = ctypes.CDLL(name)
        libc.malloc_trim  # noqa: B018  (glibc only: musl and others have no malloc_trim)
    except (OSError, AttributeError):
        return None
    return libc


def map_large_allocations(threshold: int = 1 << 20) -> bool:
    """Serve every allocation of ``threshold`` bytes or more by mmap, so that freeing it unmaps it.

    glibc otherwise raises this threshold by itself after a large block is freed, and later large
    blocks (an ONNX model's weights, its parsed protobuf) come from a thread's own malloc arena,
    whose free pages malloc_trim does not give back: measured on the reference machine, a 16 MB
    model parsed on a loader thread left 32 MB resident for good. Process-wide; returns whether
    the C library took the setting.
    """
    libc = _libc()
    if libc is None:
        return False
    m_mmap_threshold = -3
    return bool(libc.mallopt(m_mmap_threshold, threshold))


def release_freed_memory() -> None:
    """Hand the heap's free pages back to the system (glibc's malloc_trim).

    Measured on the reference machine: a 50 MB ONNX model adds about 150 MB when loaded and run;
    dropping its session returns none of it to the system, malloc_trim returns all of it. No
    gc.collect() here: engines are freed by reference counting, and a full collection holds the
    GIL for 6-25 ms, stalling every model being served (ctypes releases the GIL for malloc_trim).
    """
    libc = _libc()
    if libc is not None:
        libc.malloc_trim(0)


__all__ = ["format_size", "map_large_allocations", "parse_size", "release_freed_memory", "resident_bytes"]
