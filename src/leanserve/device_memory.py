"""Accelerator memory a model takes, measured through NVML where it is present.

A model on CUDA or TensorRT keeps its weights and arenas in device memory, which the resident set
does not show. Where NVIDIA's management library answers (the ``nvidia-ml-py`` package, imported
only when present, and a driver), the registry reads this process's device memory before and after
a version loads and warms up, and counts the growth in the version's size beside its resident-set
growth. Without NVML, or without a GPU, nothing is read and device memory counts zero.

NVML reports device memory per process; where the driver gives no per-process view, the whole
device's used memory is read, attributable because versions load one at a time. (Inside a container
whose PID namespace the driver does not see, the process is never listed and reads zero.)
"""

from __future__ import annotations

import importlib
import logging
import os
from collections.abc import Callable, Mapping
from functools import cache
from typing import Any

log = logging.getLogger("leanserve.memory")

# Device index -> bytes in use; empty when nothing can be read.
DeviceReading = dict[int, int]


def device_growth(before: Mapping[int, int], after: Mapping[int, int]) -> DeviceReading:
    """Bytes a load added on each device read both times (none where it added nothing)."""
    grown = {index: used - before[index] for index, used in after.items() if index in before}
    return {index: n for index, n in grown.items() if n > 0}


@cache
def _nvml() -> Any | None:
    """The initialised pynvml module, or None where there is no package, driver or GPU."""
    try:
        nvml: Any = importlib.import_module("pynvml")
        nvml.nvmlInit()
        if nvml.nvmlDeviceGetCount() < 1:
            return None
    except Exception as e:  # no package (ImportError), no driver or no device (NVMLError)
        log.debug("no device memory readings: %s", e)
        return None
    return nvml


def read_device_memory(nvml: Callable[[], Any | None] = _nvml, pid: int | None = None) -> DeviceReading:
    """This process's memory on each GPU (or the GPU's used memory where per-process figures are hidden)."""
    lib = nvml()
    if lib is None:
        return {}
    pid = os.getpid() if pid is None else pid
    reading: DeviceReading = {}
    try:
        for index in range(lib.nvmlDeviceGetCount()):
            handle = lib.nvmlDeviceGetHandleByIndex(index)
            reading[index] = _process_bytes(lib, handle, pid)
    except Exception as e:  # a driver that fails mid-way: no figure rather than a wrong one
        log.warning("could not read device memory: %s", e)
        return {}
    return reading


def _process_bytes(lib: Any, handle: Any, pid: int) -> int:
    try:
        processes = lib.nvmlDeviceGetComputeRunningProcesses(handle)
    except Exception:
        processes = None
    if processes is None:  # no per-process view: the device as a whole
        return int(lib.nvmlDeviceGetMemoryInfo(handle).used)
    for process in processes:
        if process.pid == pid and process.usedGpuMemory is not None:
            return int(process.usedGpuMemory)
    return 0  # this process holds nothing on the device (yet)


__all__ = ["DeviceReading", "device_growth", "read_device_memory"]
