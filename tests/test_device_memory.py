"""Device memory through NVML: pure parts with a fake NVML, the registry counting it, a real GPU where present."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from leanserve import registry as registry_module
from leanserve.device_memory import device_growth, read_device_memory
from leanserve.registry import ModelRegistry, RegistryOptions
from tests.fixtures.onnx_models import write_marked_model

MIB = 1 << 20


@dataclass
class _Process:
    pid: int
    usedGpuMemory: int | None


@dataclass
class _Info:
    used: int


class FakeNvml:
    """pynvml's calls that leanserve makes, over a table of devices."""

    def __init__(self, devices: list[dict[str, Any]]) -> None:
        self.devices = devices

    def nvmlDeviceGetCount(self) -> int:
        return len(self.devices)

    def nvmlDeviceGetHandleByIndex(self, index: int) -> dict[str, Any]:
        return self.devices[index]

    def nvmlDeviceGetComputeRunningProcesses(self, handle: dict[str, Any]) -> list[_Process]:
        if handle.get("processes") is None:
            raise RuntimeError("NVML_ERROR_NOT_SUPPORTED")
        return [_Process(pid, used) for pid, used in handle["processes"].items()]

    def nvmlDeviceGetMemoryInfo(self, handle: dict[str, Any]) -> _Info:
        if handle.get("broken"):
            raise RuntimeError("NVML_ERROR_GPU_IS_LOST")
        return _Info(handle["used"])


def test_growth_is_per_device_and_only_what_grew() -> None:
    assert device_growth({0: 100, 1: 500}, {0: 350, 1: 400, 2: 9}) == {0: 250}
    assert device_growth({}, {0: 10}) == {}


def test_reads_this_process_per_device() -> None:
    fake = FakeNvml([{"processes": {7: 300 * MIB, 8: 5}, "used": 999}, {"processes": {8: 5}, "used": 999}])
    assert read_device_memory(lambda: fake, pid=7) == {0: 300 * MIB, 1: 0}


def test_without_a_per_process_view_the_device_is_read_whole() -> None:
    fake = FakeNvml([{"processes": None, "used": 123}])
    assert read_device_memory(lambda: fake, pid=7) == {0: 123}


def test_no_nvml_or_a_failing_driver_reads_nothing() -> None:
    assert read_device_memory(lambda: None) == {}
    assert read_device_memory(lambda: FakeNvml([{"processes": None, "broken": True}]), pid=1) == {}


async def test_the_registry_counts_device_memory_in_a_versions_size(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    readings = iter([{0: 1000 * MIB}, {0: 1300 * MIB}])  # before and after the load
    monkeypatch.setattr(registry_module, "read_device_memory", lambda: next(readings))
    write_marked_model(tmp_path / "m" / "1" / "model.onnx", 1.0, weight_mib=0.05)
    registry = ModelRegistry(tmp_path, RegistryOptions(memory_budget=2000 * MIB))
    await registry.load_all()
    snap = registry.describe("m", None)
    assert snap.memory_bytes >= 300 * MIB  # the device's 300 MiB and the resident growth
    usage = snap.stats.triton_dict()["memory_usage"]
    assert usage[1] == {"type": "GPU", "id": 0, "byte_size": 300 * MIB}
    assert usage[0]["type"] == "CPU" and usage[0]["byte_size"] == snap.memory_bytes - 300 * MIB
    await registry.unload("m")
    # What did not come back is resident memory: the device's share is not counted as kept.
    assert registry.describe("m", None).stats.memory_not_returned_bytes <= usage[0]["byte_size"]
    await registry.close()


def _cuda() -> bool:
    import onnxruntime as ort

    return "CUDAExecutionProvider" in ort.get_available_providers() and bool(read_device_memory())


@pytest.mark.skipif(not _cuda(), reason="needs a GPU, NVML (nvidia-ml-py) and onnxruntime with CUDA")
async def test_a_model_on_cuda_is_measured_on_the_device(tmp_path: Path) -> None:
    write_marked_model(tmp_path / "m" / "1" / "model.onnx", 1.0, weight_mib=64)
    (tmp_path / "m" / "model.toml").write_text('[runtime]\nproviders = ["CUDAExecutionProvider"]\n')
    registry = ModelRegistry(tmp_path)
    await registry.load_all()
    snap = registry.describe("m", None)
    assert sum(snap.stats.device_memory_bytes.values()) >= 64 * MIB
    lease = await registry.acquire("m", None)
    out = await lease.batcher.infer({"x": np.ones((1, 4), np.float32)}, 1)
    registry.release(lease)
    assert float(out["y"][0, 0]) == 1.0
    await registry.close()
