from __future__ import annotations

from pathlib import Path

from leanserve.optimization.measure import (
    NOT_MEASURABLE,
    Settings,
    energy_per_inference,
    environment,
    peak_memory,
    time_runs,
)


def test_time_runs_counts_and_orders() -> None:
    settings = Settings(warmup=2, rounds=3, runs_per_round=5)
    calls = []
    lat = time_runs(lambda: calls.append(1), 1, settings)
    assert len(calls) == 2 + 15 and lat.runs == 15 and lat.warmup == 2
    assert lat.rounds_ms.min <= lat.rounds_ms.median <= lat.rounds_ms.max
    assert 0 <= lat.p50_ms <= lat.p99_ms


def test_peak_memory_of_a_fresh_process(tmp_path: Path) -> None:
    import numpy as np
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    from leanserve.config import RuntimeOptions

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
    onnx.save(model, str(tmp_path / "m.onnx"))
    peak = peak_memory(tmp_path / "m.onnx", "onnxruntime", RuntimeOptions(), {"x": np.ones((1, 2048), np.float32)})
    if peak is not None:  # not measurable outside Linux
        assert 30 < peak < 1000


def test_energy_is_never_estimated() -> None:
    energy = energy_per_inference(lambda: None, 1, 0.01)
    if not Path("/sys/class/powercap/intel-rapl:0/energy_uj").exists():
        assert energy.joules_per_inference is None and energy.source == NOT_MEASURABLE


def test_environment() -> None:
    env = environment()
    assert env.logical_cores >= 1 and "onnxruntime" in env.libraries and env.cpu_model
