"""Sizes, the process's resident memory, and giving freed heap back."""

from __future__ import annotations

import os

import numpy as np
import pytest

from leanserve.errors import UsageError
from leanserve.memory import format_size, parse_size, release_freed_memory, resident_bytes


@pytest.mark.parametrize(
    ("text", "expected"),
    [("6GiB", 6 << 30), ("300MiB", 300 << 20), ("512 KiB", 512 << 10), ("1000B", 1000), ("1.5GiB", 3 << 29), (42, 42)],
)
def test_parse_size(text: str | int, expected: int) -> None:
    assert parse_size(text) == expected


@pytest.mark.parametrize("text", ["", "lots", "6 parsecs", "-1MiB", "GiB"])
def test_parse_size_refuses_what_is_not_a_size(text: str) -> None:
    with pytest.raises(UsageError, match="not a size"):
        parse_size(text)


def test_format_size() -> None:
    assert format_size(300 << 20) == "300.0 MiB"
    assert format_size(12) == "12 B"


@pytest.mark.skipif(not os.path.exists("/proc/self/statm"), reason="needs /proc")
def test_freed_heap_goes_back_to_the_system() -> None:
    release_freed_memory()
    before = resident_bytes()
    # Many small blocks, so glibc serves them from the heap rather than from mmap.
    blocks = [np.ones(2048, np.float64) for _ in range(40_000)]  # ~650 MB of 16 KiB blocks
    grown = resident_bytes() - before
    assert grown > 400 << 20
    del blocks
    release_freed_memory()
    assert resident_bytes() - before < grown * 0.2
