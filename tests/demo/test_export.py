from __future__ import annotations

from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest
import torch
from torch import nn

from leanserve.demo import export
from leanserve.demo.export import ExportSpec, compare_with_torch, export_onnx
from leanserve.errors import ServerError

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


def test_both_exporters_failing_is_a_server_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def broken(*args: object) -> None:
        raise RuntimeError("broken")

    monkeypatch.setattr(export, "_export_dynamo", broken)
    monkeypatch.setattr(export, "_export_torchscript", broken)
    with pytest.raises(ServerError, match="cannot export Pooled to ONNX"):
        export_onnx(Pooled(), _example(), tmp_path / "model.onnx", SPEC, lambda _: None)


def test_a_specialized_dimension_is_caught(tmp_path: Path) -> None:
    # Without a dynamic input the exporter fixes the batch of the output: the check notices.
    fixed = ExportSpec(SPEC.input_names, SPEC.output_names, {"embedding": {0: "batch"}})
    with pytest.raises(ServerError, match="axis 0 of 'embedding' was exported as fixed size 2"):
        export_onnx(Pooled(), _example(), tmp_path / "model.onnx", fixed, lambda _: None)
