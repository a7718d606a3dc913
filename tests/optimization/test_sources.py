from __future__ import annotations

import io
import zipfile
from pathlib import Path

import onnx
import pytest
from onnx import TensorProto, helper

from leanserve.errors import UsageError
from leanserve.optimization.sources import prepare, unique_node_names

from .conftest import ModelFixture


@pytest.mark.parametrize("suffix", [".pt", ".pth", ".pkl", ".ckpt"])
def test_pickle_formats_are_refused(tmp_path: Path, suffix: str) -> None:
    path = tmp_path / f"model{suffix}"
    path.write_bytes(b"\x80\x04K\x01.")
    with pytest.raises(UsageError, match="unpickled"):
        prepare(path, tmp_path)


def test_missing_invalid_and_unknown_files(tmp_path: Path) -> None:
    with pytest.raises(UsageError, match="does not exist"):
        prepare(tmp_path / "nope.onnx", tmp_path)
    (tmp_path / "bad.onnx").write_bytes(b"not a model")
    with pytest.raises(UsageError, match="not a valid ONNX model"):
        prepare(tmp_path / "bad.onnx", tmp_path)
    (tmp_path / "m.tflite").write_bytes(b"")
    with pytest.raises(UsageError, match="unknown model format"):
        prepare(tmp_path / "m.tflite", tmp_path)
    with pytest.raises(UsageError, match="cannot optimize"):
        prepare(42, tmp_path)


def test_onnx_source_keeps_the_users_bytes(mlp: ModelFixture, tmp_path: Path) -> None:
    source = prepare(mlp.model, tmp_path)
    assert source.kind == "onnx" and source.original_file == mlp.model and len(source.sha256) == 64


def test_duplicate_and_empty_node_names_are_made_unique() -> None:
    nodes = [
        helper.make_node("Relu", ["x"], ["a"], name="n"),
        helper.make_node("Relu", ["a"], ["b"], name="n"),
        helper.make_node("Relu", ["b"], ["y"]),
    ]
    graph = helper.make_graph(
        nodes,
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1])],
    )
    model = helper.make_model(graph)
    assert unique_node_names(model) == 2
    assert [n.name for n in model.graph.node] == ["n", "n_1", "Relu_2"]


class NotATensor:
    """Any class: weights_only loading refuses it, only a full unpickle would build it."""


def _tiny_module():  # type: ignore[no-untyped-def]
    import torch

    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Linear(8, 16), torch.nn.ReLU(), torch.nn.Linear(16, 4)).eval()


@pytest.mark.slow
def test_pt2_is_exported_without_pickle(tmp_path: Path) -> None:
    import torch

    module = _tiny_module()
    x = torch.randn(2, 8)
    program = torch.export.export(module, (x,), dynamic_shapes=({0: torch.export.Dim("batch", max=1024)},))
    torch.export.save(program, str(tmp_path / "m.pt2"))
    source = prepare(tmp_path / "m.pt2", tmp_path)
    assert source.kind == "pt2" and any("dynamo" in n for n in source.notes)
    model = onnx.load(str(source.onnx_path))
    assert model.graph.input[0].type.tensor_type.shape.dim[0].dim_param  # the batch stays dynamic


@pytest.mark.slow
def test_pt2_with_a_pickled_payload_is_refused(tmp_path: Path) -> None:
    import torch

    module = _tiny_module()
    program = torch.export.export(module, (torch.randn(2, 8),))
    torch.export.save(program, str(tmp_path / "m.pt2"))
    # Rewrite the archive with a sample-inputs payload that only full pickle can load.
    buffer = io.BytesIO()
    torch.save((NotATensor(),), buffer)
    with zipfile.ZipFile(tmp_path / "m.pt2") as src, zipfile.ZipFile(tmp_path / "evil.pt2", "w") as dst:
        for item in src.infolist():
            data = buffer.getvalue() if "/sample_inputs/" in item.filename else src.read(item.filename)
            dst.writestr(item, data)
    with pytest.raises(UsageError, match="pickled"):
        prepare(tmp_path / "evil.pt2", tmp_path)


@pytest.mark.slow
def test_live_module_is_exported(tmp_path: Path) -> None:
    import torch

    source = prepare(_tiny_module(), tmp_path, (torch.randn(2, 8),))
    assert source.kind == "torch.nn.Module" and source.origin == "Sequential"
    with pytest.raises(UsageError, match="example_inputs"):
        prepare(_tiny_module(), tmp_path)
