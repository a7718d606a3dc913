"""The one torch -> ONNX exporter: names, dynamic axes, the dynamo -> TorchScript fallback, the checks."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest
import torch
from torch import nn

from leanserve.errors import UsageError
from leanserve.optimization import export
from leanserve.optimization.export import ExportSpec, batch_spec, compare_with_torch, export_onnx
from leanserve.optimization.sources import prepare

SPEC = ExportSpec(
    input_names=("ids",),
    output_names=("embedding",),
    dynamic_axes={"ids": {0: "batch", 1: "sequence"}, "embedding": {0: "batch"}},
)


class Pooled(nn.Module):
    """An output named "embedding" after an nn.Embedding: the dynamo exporter's name clash."""

    def __init__(self) -> None:
        super().__init__()
        self.embedding = nn.Embedding(50, 4)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        pooled: torch.Tensor = self.embedding(ids).mean(dim=1) * 2.0
        return pooled


def _example() -> tuple[torch.Tensor, ...]:
    return (torch.arange(12, dtype=torch.int64).reshape(2, 6),)


def _feeds() -> list[dict[str, np.ndarray]]:
    return [{"ids": np.arange(n * m, dtype=np.int64).reshape(n, m) % 50} for n, m in ((1, 3), (5, 9))]


def _run(path: Path) -> None:
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    for feed in _feeds():
        assert session.run(None, feed)[0].shape == (len(feed["ids"]), 4)


def test_dynamo_export_with_a_clashing_output_name(tmp_path: Path) -> None:
    messages: list[str] = []
    path = tmp_path / "model.onnx"
    assert export_onnx(Pooled(), _example(), path, SPEC, messages.append) == "dynamo"
    assert messages == []
    _run(path)
    assert compare_with_torch(path, Pooled().eval(), _feeds(), SPEC) > 1.0  # another init: differs
    model = Pooled().eval()
    export_onnx(model, _example(), path, SPEC, messages.append)
    assert compare_with_torch(path, model, _feeds(), SPEC) < 1e-6


def test_falls_back_to_torchscript_and_says_why(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def broken(*args: object) -> None:
        raise RuntimeError("no dynamo today\nsecond line")

    monkeypatch.setattr(export, "_export_dynamo", broken)
    messages: list[str] = []
    model = Pooled().eval()
    path = tmp_path / "model.onnx"
    assert export_onnx(model, _example(), path, SPEC, messages.append) == "torchscript"
    assert len(messages) == 1 and "RuntimeError: no dynamo today" in messages[0] and "TorchScript" in messages[0]
    _run(path)
    assert compare_with_torch(path, model, _feeds(), SPEC) < 1e-6


def test_both_exporters_failing_is_an_error_naming_both(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def broken(*args: object) -> None:
        raise RuntimeError("broken")

    monkeypatch.setattr(export, "_export_dynamo", broken)
    monkeypatch.setattr(export, "_export_torchscript", broken)
    with pytest.raises(UsageError, match="neither ONNX exporter can export Pooled: dynamo said RuntimeError"):
        export_onnx(Pooled(), _example(), tmp_path / "model.onnx", SPEC, lambda _: None)


def test_a_specialized_dimension_is_caught(tmp_path: Path) -> None:
    # Without a dynamic input the exporter fixes the batch of the output: the check notices.
    fixed = ExportSpec(SPEC.input_names, SPEC.output_names, {"embedding": {0: "batch"}})
    with pytest.raises(UsageError, match="axis 0 of 'embedding' was exported as fixed size 2"):
        export_onnx(Pooled(), _example(), tmp_path / "model.onnx", fixed, lambda _: None)


class TwoInputs(nn.Module):
    def forward(self, image: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
        return image * scale


def test_batch_spec_names_inputs_as_forward_does() -> None:
    spec = batch_spec(TwoInputs(), 2)
    assert spec.input_names == ("image", "scale")
    assert spec.dynamic_axes == {"image": {0: "batch"}, "scale": {0: "batch"}}
    # A forward(*args) names nothing: the TorchScript exporter's own names are used.
    assert batch_spec(nn.Sequential(), 1).input_names == ("input",)

    class Star(nn.Module):
        def forward(self, *xs: torch.Tensor) -> torch.Tensor:
            return xs[0]

    assert batch_spec(Star(), 2).input_names == ("input_0", "input_1")


def test_optimize_exports_a_module_the_same_way_whichever_exporter_succeeds(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # optimize(module) and the demo share this exporter: with dynamo failing, the TorchScript
    # file still names its inputs after forward(), so the user's data keyed that way still fits.
    example = (torch.ones(2, 3), torch.full((2, 1), 2.0))
    (tmp_path / "dynamo").mkdir()
    dynamo = prepare(TwoInputs(), tmp_path / "dynamo", example)
    assert "exported with the dynamo ONNX exporter" in dynamo.notes

    def broken(*args: object) -> None:
        raise RuntimeError("no dynamo today")

    monkeypatch.setattr(export, "_export_dynamo", broken)
    (tmp_path / "torchscript").mkdir()
    fallback = prepare(TwoInputs(), tmp_path / "torchscript", example)
    assert any("RuntimeError: no dynamo today" in note for note in fallback.notes)
    for source in (dynamo, fallback):
        session = ort.InferenceSession(str(source.onnx_path), providers=["CPUExecutionProvider"])
        assert [i.name for i in session.get_inputs()] == ["image", "scale"]
        x, s = np.ones((5, 3), np.float32), np.full((5, 1), 3.0, np.float32)  # another batch size
        np.testing.assert_allclose(session.run(None, {"image": x, "scale": s})[0], x * 3.0)
