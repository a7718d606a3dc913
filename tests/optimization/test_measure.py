"""Measurement: peak memory in a fresh process, energy from RAPL counters."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from leanserve.config import RuntimeOptions
from leanserve.errors import ServerError
from leanserve.optimization import measure
from leanserve.optimization.measure import NOT_MEASURABLE, energy_per_inference, peak_memory

needs_proc = pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="peak memory is read from /proc")


def _matmul_model(path: Path) -> Path:
    # A 32 MiB weight: the peak must see it, whatever this process has allocated before.
    w = numpy_helper.from_array(np.ones((2048, 4096), np.float32), "w")
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["x", "w"], ["y"])],
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", 2048])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["n", 4096])],
        [w],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, str(path))
    return path


@needs_proc
def test_peak_memory_of_a_fresh_process(tmp_path: Path) -> None:
    path = _matmul_model(tmp_path / "m.onnx")
    peak = peak_memory(path, "onnxruntime", RuntimeOptions(), {"x": np.ones((1, 2048), np.float32)})
    assert peak is not None and 30 < peak < 1000


@needs_proc
def test_a_crashed_measuring_process_is_an_error_with_its_stderr(tmp_path: Path) -> None:
    path = _matmul_model(tmp_path / "m.onnx")
    with pytest.raises(ServerError, match="crashed with exit code 1") as caught:
        peak_memory(path, "onnxruntime", RuntimeOptions(), {"not_an_input": np.ones((1, 2048), np.float32)})
    assert "not_an_input" in str(caught.value)  # the engine's own complaint, from the child's stderr


@needs_proc
def test_a_killed_measuring_process_says_so(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = _matmul_model(tmp_path / "m.onnx")
    monkeypatch.setattr(measure, "_PEAK_SCRIPT", "import os, signal; os.kill(os.getpid(), signal.SIGKILL)")
    with pytest.raises(ServerError, match="killed by signal 9") as caught:
        peak_memory(path, "onnxruntime", RuntimeOptions(), {"x": np.ones((1, 2048), np.float32)})
    assert "out of memory" in str(caught.value)


def _rapl(root: Path, domain: str, microjoules: int) -> Path:
    (root / domain).mkdir(parents=True, exist_ok=True)
    counter = root / domain / "energy_uj"
    counter.write_text(str(microjoules))
    return counter


def _add(counter: Path, microjoules: int) -> None:
    counter.write_text(str(int(counter.read_text()) + microjoules))


def test_energy_is_read_from_the_package_counters(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(measure, "_RAPL", tmp_path)
    package = _rapl(tmp_path, "intel-rapl:0", 5_000_000)
    core = _rapl(tmp_path, "intel-rapl:0:0", 0)  # a sub-domain, already inside its package's count

    def run() -> None:  # one run of two inferences spends 1 J of the package, 0.7 J of it in the cores
        _add(package, 1_000_000)
        _add(core, 700_000)

    energy = energy_per_inference(run, inferences_per_run=2, seconds=0.01)
    assert energy.joules_per_inference == pytest.approx(0.5)
    assert energy.source == "intel-rapl (whole package)"


def test_energy_is_never_estimated(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(measure, "_RAPL", tmp_path / "absent")
    assert energy_per_inference(lambda: None, 1, 0.01).joules_per_inference is None

    monkeypatch.setattr(measure, "_RAPL", tmp_path)
    counter = _rapl(tmp_path, "intel-rapl:0", 2**32 - 10)
    wrapped = energy_per_inference(lambda: counter.write_text("5"), 1, 0.01)  # the counter wrapped around
    assert wrapped.joules_per_inference is None and wrapped.source == NOT_MEASURABLE

    counter.write_text("not a number")  # present but unreadable, as root-only counters read
    unreadable = energy_per_inference(lambda: None, 1, 0.01)
    assert unreadable.joules_per_inference is None and unreadable.source == NOT_MEASURABLE
