"""The ONNX Runtime engine wrapper."""

from __future__ import annotations

from pathlib import Path

from leanserve.config import RuntimeOptions
from leanserve.runtimes.onnx import OnnxRuntime
from tests.fixtures.onnx_models import write_mlp


def test_providers_answer_after_close(tmp_path: Path) -> None:
    """The registry closes a session before it drops the engine; a snapshot taken between (the
    dashboard's sampler during a shutdown or an unload) reads the providers all the same."""
    runtime = OnnxRuntime(write_mlp(tmp_path / "m.onnx"), RuntimeOptions())
    providers = runtime.providers
    runtime.close()
    assert runtime.providers == providers and "CPUExecutionProvider" in providers
