"""The shared timing primitives: repeat loops, percentiles, CPU use, the environment."""

from __future__ import annotations

import os
import sys
import threading
import time

import numpy as np

from leanserve.timing import (
    CpuMeter,
    Settings,
    cpu_seconds,
    environment,
    percentile,
    percentiles,
    thread_cpu_seconds,
    time_for,
    time_runs,
)


def test_time_runs_counts_and_orders() -> None:
    settings = Settings(warmup=2, rounds=3, runs_per_round=5)
    calls = []
    lat = time_runs(lambda: calls.append(1), 1, settings)
    assert len(calls) == 2 + 15 and lat.runs == 15 and lat.warmup == 2
    assert lat.rounds_ms.min <= lat.rounds_ms.median <= lat.rounds_ms.max
    assert 0 <= lat.p50_ms <= lat.p99_ms


def test_time_for_measures_a_known_sleep() -> None:
    ms = time_for(lambda: time.sleep(0.002), seconds=0.02)
    assert 1.9 <= ms < 20


def test_percentiles_match_numpy_and_are_nan_when_empty() -> None:
    values = np.random.default_rng(0).exponential(size=1001)
    assert percentiles(values, (50, 99)) == [float(np.percentile(values, 50)), float(np.percentile(values, 99))]
    assert percentile([1.0, 2.0, 3.0], 50) == 2.0
    assert all(np.isnan(x) for x in percentiles([], (50, 99)))


def test_cpu_meter_reads_cpu_over_wall_time() -> None:
    # Burn a fixed amount of CPU rather than of wall time: on a loaded machine a busy loop may get
    # a sliver of a core, but the meter must still read what it got.
    meter = CpuMeter()
    meter.start()
    began, spent = time.perf_counter(), cpu_seconds()
    while cpu_seconds() - spent < 0.05:
        pass
    reading, wall = meter.read(), time.perf_counter() - began
    assert reading >= 0.9 * 0.05 / wall  # other threads of the process may add to it, never subtract


def test_thread_cpu_seconds_tells_the_busy_thread_from_the_idle_one() -> None:
    stop = threading.Event()
    idle = threading.Thread(target=stop.wait)
    idle.start()
    try:
        before = thread_cpu_seconds(os.getpid())
        spent = cpu_seconds()
        while cpu_seconds() - spent < 0.1:  # this thread burns 0.1 s of CPU
            pass
        after = thread_cpu_seconds(os.getpid())
    finally:
        stop.set()
        idle.join()
    assert {threading.get_native_id(), idle.native_id} <= after.keys()
    burnt = after[threading.get_native_id()] - before[threading.get_native_id()]
    assert burnt >= 0.05  # /proc counts in clock ticks (10 ms)
    assert after[idle.native_id] - before[idle.native_id] < burnt
    assert thread_cpu_seconds(2**22 + 12345) == {}  # no such process


def test_environment() -> None:
    env = environment()
    assert 1 <= env.usable_cores <= env.logical_cores and "onnxruntime" in env.libraries and env.cpu_model
    assert env.python == ".".join(map(str, sys.version_info[:3]))
