"""Variant files are real and different: integer ops present, smaller, and they run."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import numpy as np
import onnx
import pytest

from leanserve.config import RuntimeOptions
from leanserve.errors import UsageError
from leanserve.optimization.data import from_arrays
from leanserve.optimization.variants import CATALOG, Builder, openvino_available, select, unavailable
from leanserve.runtimes import load_runtime

from .conftest import ModelFixture


@pytest.fixture(scope="module")
def builder(mlp: ModelFixture, tmp_path_factory: pytest.TempPathFactory) -> Builder:
    x = np.load(mlp.data)["x"][:64]
    return Builder(mlp.model, tmp_path_factory.mktemp("variants"), from_arrays({"x": x}), dynamic_batch=True)


def _ops(path: Path) -> Counter[str]:
    return Counter(n.op_type for n in onnx.load(str(path)).graph.node)


def _int8_initializers(path: Path) -> int:
    return sum(t.data_type == onnx.TensorProto.INT8 for t in onnx.load(str(path)).graph.initializer)


def _runs_close(path: Path, platform: str, options: RuntimeOptions, original: Path) -> float:
    x = np.load(original.parent / "eval.npz")["x"][:16]
    want = load_runtime(original, "onnxruntime", RuntimeOptions()).run({"x": x})["logits"]
    got = load_runtime(path, platform, options).run({"x": x})["logits"]
    return float(np.mean(np.argmax(want, 1) == np.argmax(got, 1)))


def test_int8_dynamic_has_integer_ops_and_is_smaller(builder: Builder, mlp: ModelFixture) -> None:
    built = builder.build(CATALOG["ort-int8-dynamic"])
    ops = _ops(built.model_file)
    assert ops["MatMulInteger"] == 2 and ops["DynamicQuantizeLinear"] >= 1 and ops["MatMul"] == 0
    assert built.model_file.stat().st_size < 0.5 * mlp.model.stat().st_size
    assert _runs_close(built.model_file, "onnxruntime", built.runtime, mlp.model) >= 0.9


def test_matmul_only_per_channel(builder: Builder) -> None:
    built = builder.build(CATALOG["ort-int8-dynamic-matmul-pc"])
    assert built.settings["per_channel"] is True and built.settings["op_types"] == ["MatMul"]
    assert _ops(built.model_file)["MatMulInteger"] == 2


@pytest.mark.parametrize("name", ["ort-int8-static-minmax-pt", "ort-int8-static-percentile-pc"])
def test_int8_static_qdq(builder: Builder, mlp: ModelFixture, name: str) -> None:
    built = builder.build(CATALOG[name])
    ops = _ops(built.model_file)
    assert ops["QuantizeLinear"] >= 2 and ops["DequantizeLinear"] >= 4
    assert _int8_initializers(built.model_file) >= 2
    assert built.model_file.stat().st_size < 0.5 * mlp.model.stat().st_size
    assert built.settings["calibration_examples"] == 64
    weight_scales = [
        t for t in onnx.load(str(built.model_file)).graph.initializer if t.name.startswith("w") and "scale" in t.name
    ]
    assert weight_scales
    per_channel = all(len(t.dims) == 1 and t.dims[0] > 1 for t in weight_scales)
    assert per_channel == name.endswith("-pc")
    assert _runs_close(built.model_file, "onnxruntime", built.runtime, mlp.model) >= 0.8


def test_ort_optimized_is_saved_offline(builder: Builder, mlp: ModelFixture) -> None:
    built = builder.build(CATALOG["ort-fp32-opt"])
    assert built.model_file.exists() and built.runtime.graph_optimization == "disabled"
    assert _runs_close(built.model_file, "onnxruntime", built.runtime, mlp.model) == 1.0


def test_excluded_nodes_stay_float(builder: Builder) -> None:
    # Pre-processing fuses MatMul + Add into Gemm; exclusion names the pre-processed nodes.
    prepared, _ = builder.prepared()
    fc2_name = next(n.name for n in onnx.load(str(prepared)).graph.node if n.name.startswith("fc2"))
    built = builder.build(CATALOG["ort-int8-static-minmax-pc"], nodes_to_exclude=[fc2_name], name="x-fallback")
    model = onnx.load(str(built.model_file))
    producers = {o: n.op_type for n in model.graph.node for o in n.output}
    fc2 = next(n for n in model.graph.node if n.name == fc2_name)
    assert producers.get(fc2.input[1]) != "DequantizeLinear"  # weights stay float
    assert built.model_file.parent.name == "x-fallback"


@pytest.mark.skipif(not openvino_available(), reason="openvino is not installed")
@pytest.mark.parametrize("name", ["ov-fp32", "ov-bf16"])
def test_openvino_ir(builder: Builder, mlp: ModelFixture, name: str) -> None:
    if unavailable(CATALOG[name]):
        pytest.skip(unavailable(CATALOG[name]) or "")
    built = builder.build(CATALOG[name])
    assert [f.suffix for f in built.files] == [".xml", ".bin"]
    assert built.runtime.providers[0].startswith("openvino:CPU:")
    assert _runs_close(built.model_file, "openvino", built.runtime, mlp.model) >= 0.9


@pytest.mark.skipif(not openvino_available(), reason="openvino is not installed")
def test_openvino_int8_weights(builder: Builder, mlp: ModelFixture) -> None:
    spec = CATALOG["ov-int8-weights"]
    if unavailable(spec):
        pytest.skip(unavailable(spec) or "")
    import openvino as ov

    built = builder.build(spec)
    model = ov.Core().read_model(str(built.model_file))
    int8_constants = [
        op for op in model.get_ops() if op.get_type_name() == "Constant" and op.get_element_type() == ov.Type.i8
    ]
    assert len(int8_constants) == 2 == built.settings["compressed_weights"]  # both MatMul weights
    assert model.get_rt_info(["runtime_options", "DYNAMIC_QUANTIZATION_GROUP_SIZE"]).astype(int) == 32
    assert built.files[1].stat().st_size < 0.5 * mlp.model.stat().st_size
    assert built.runtime.providers == ("openvino:CPU:f32",)
    assert _runs_close(built.model_file, "openvino", built.runtime, mlp.model) >= 0.9


def test_fp16_needs_a_gpu() -> None:
    import onnxruntime as ort

    if "CUDAExecutionProvider" not in ort.get_available_providers():
        assert "GPU" in (unavailable(CATALOG["ort-fp16"]) or "")


def test_select() -> None:
    assert [s.name for s in select(["ov-fp32", "ov-fp32"], quick=False)] == ["ov-fp32"]
    assert all("entropy" not in s.name for s in select(None, quick=False))
    # OpenVINO running the static QDQ model shares that family's fallback.
    assert CATALOG["ov-int8"].family == CATALOG["ort-int8-static-minmax-pc"].family == "int8-static"
    # ... while how each is made, its method, differs.
    assert CATALOG["ov-int8"].method == "openvino" and CATALOG["ort-int8-static-minmax-pc"].method == "int8-static"
    with pytest.raises(UsageError, match="unknown variant"):
        select(["int4"], quick=False)


def test_pre_processing_leaves_nothing_in_the_working_directory(
    demo_repo: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Symbolic shape inference fails on the dynamo MiniLM export, and ONNX Runtime then saves
    # its half-inferred model (90 MB) into the current directory.
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    monkeypatch.chdir(cwd)
    with np.load(demo_repo / "minilm" / "eval.npz") as data:
        calibration = from_arrays({"input_ids": data["input_ids"][:4], "attention_mask": data["attention_mask"][:4]})
    builder = Builder(demo_repo / "minilm" / "1" / "model.onnx", tmp_path / "work", calibration, dynamic_batch=True)
    (tmp_path / "work").mkdir()
    prepared, note = builder.prepared()
    assert "symbolic shape inference skipped" in note
    assert prepared.exists()
    assert list(cwd.iterdir()) == []


def test_a_build_mutes_only_the_quantizer_and_only_during_its_call(
    builder: Builder,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
    capsys: pytest.CaptureFixture[str],
) -> None:
    # optimize may run inside a server: the server's own warnings during a build must still be
    # logged, and nothing about logging may stay changed after it.
    import logging

    import onnxruntime.quantization as q

    real = q.quantize_dynamic
    ort_file = str(Path(q.__file__).resolve())

    def chatty(*args: object, **kwargs: object) -> None:
        print("Collecting tensor data ...")  # as ORT's calibrators print
        logging.getLogger().handle(  # as ORT's quantizer warns, with logging.warning()
            logging.LogRecord("root", logging.WARNING, ort_file, 1, "per-channel axis", None, None)
        )
        logging.getLogger("onnxruntime.quantization").warning("quantizer detail")
        logging.getLogger("leanserve.server").warning("the server's own warning")
        real(*args, **kwargs)

    monkeypatch.setattr(q, "quantize_dynamic", chatty)
    levels = {name: logging.getLogger(name).level for name in ("onnxruntime", "nncf", "openvino")}
    with caplog.at_level(logging.WARNING):
        builder.build(CATALOG["ort-int8-dynamic"], name="quiet-check")
        print("after the build")
    messages = [r.getMessage() for r in caplog.records]
    assert "the server's own warning" in messages
    assert "per-channel axis" not in messages and "quantizer detail" not in messages
    out = capsys.readouterr().out
    assert "Collecting tensor data" not in out and "after the build" in out
    assert {name: logging.getLogger(name).level for name in levels} == levels
    assert not logging.getLogger().filters and logging.root.manager.disable == logging.NOTSET
