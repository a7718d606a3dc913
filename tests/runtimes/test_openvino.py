from __future__ import annotations

import threading
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from leanserve.config import RuntimeOptions
from leanserve.errors import ConfigError, InvalidInput

pytest.importorskip("openvino")

from leanserve.runtimes import load_runtime
from leanserve.runtimes.openvino import OpenVinoRuntime, Target, parse_providers

W = np.arange(12, dtype=np.float32).reshape(4, 3) / 10


@pytest.fixture(scope="module")
def model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["x", "w"], ["y"], name="mm"), helper.make_node("Cast", ["y"], ["n"], to=7)],
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 4])],
        [
            helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 3]),
            helper.make_tensor_value_info("n", TensorProto.INT64, ["batch", 3]),
        ],
        [numpy_helper.from_array(W, "w")],
    )
    m = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    m.ir_version = 8
    path = tmp_path_factory.mktemp("ov") / "m.onnx"
    onnx.save(m, str(path))
    return path


@pytest.mark.parametrize(
    ("providers", "target"),
    [
        ((), Target("CPU", None)),
        (("openvino",), Target("CPU", None)),
        (("openvino:bf16",), Target("CPU", "bf16")),
        (("openvino:CPU:f32",), Target("CPU", "f32")),
        (("OpenVINO:cpu:BF16",), Target("CPU", "bf16")),
    ],
)
def test_parse_providers(providers: tuple[str, ...], target: Target) -> None:
    assert parse_providers(providers) == target


@pytest.mark.parametrize("providers", [("CPUExecutionProvider",), ("openvino:TPU",), ("openvino", "openvino:f32")])
def test_bad_providers(providers: tuple[str, ...]) -> None:
    with pytest.raises(ConfigError):
        parse_providers(providers)


def test_signature_and_run(model: Path) -> None:
    rt = load_runtime(model, "openvino", RuntimeOptions(intra_op_threads=1, providers=("openvino:CPU:f32",)))
    assert isinstance(rt, OpenVinoRuntime)
    assert [(t.name, t.datatype, t.shape) for t in rt.inputs] == [("x", "FP32", (-1, 4))]
    assert [(t.name, t.datatype, t.shape) for t in rt.outputs] == [("y", "FP32", (-1, 3)), ("n", "INT64", (-1, 3))]
    assert rt.providers == ("openvino:CPU:f32",)
    x = np.random.default_rng(0).standard_normal((5, 4)).astype(np.float32)
    out = rt.run({"x": x})
    np.testing.assert_allclose(out["y"], x @ W, rtol=1e-5, atol=1e-5)
    assert out["n"].dtype == np.int64
    assert list(rt.run({"x": x}, ["y"])) == ["y"]
    # Results are copies: the next run must not change what an earlier caller holds.
    first = rt.run({"x": x})["y"]
    rt.run({"x": x * 2})
    np.testing.assert_allclose(first, x @ W, rtol=1e-5, atol=1e-5)
    rt.close()


def test_bf16_hint(model: Path) -> None:
    import openvino as ov

    if "BF16" not in ov.Core().get_property("CPU", "OPTIMIZATION_CAPABILITIES"):
        pytest.skip("this CPU has no bf16")
    rt = OpenVinoRuntime(model, RuntimeOptions(providers=("openvino:bf16",)))
    assert rt.providers == ("openvino:CPU:bf16",)
    x = np.ones((2, 4), np.float32)
    np.testing.assert_allclose(rt.run({"x": x})["y"], x @ W, rtol=2e-2)


def test_bad_inputs(model: Path) -> None:
    rt = OpenVinoRuntime(model, RuntimeOptions())
    with pytest.raises(InvalidInput, match="missing"):
        rt.run({})
    with pytest.raises(InvalidInput, match="unknown"):
        rt.run({"x": np.ones((1, 4), np.float32)}, ["nope"])
    with pytest.raises(InvalidInput):
        rt.run({"x": np.ones((1, 5), np.float32)})


def test_unloadable_file(tmp_path: Path) -> None:
    (tmp_path / "bad.xml").write_text("<net/>")
    with pytest.raises(ConfigError, match="OpenVINO cannot load"):
        OpenVinoRuntime(tmp_path / "bad.xml", RuntimeOptions())


def test_one_caller_at_a_time_from_many_threads(model: Path) -> None:
    rt = OpenVinoRuntime(model, RuntimeOptions(intra_op_threads=1))
    errors: list[BaseException] = []

    def work(scale: float) -> None:
        x = np.full((3, 4), scale, np.float32)
        try:
            for _ in range(50):
                np.testing.assert_allclose(rt.run({"x": x})["y"], x @ W, rtol=2e-2)
        except BaseException as e:
            errors.append(e)

    threads = [threading.Thread(target=work, args=(s,)) for s in (1.0, 2.0, 3.0)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
