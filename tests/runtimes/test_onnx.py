"""The ONNX Runtime engine wrapper."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pytest

from leanserve.config import RuntimeOptions
from leanserve.errors import DeadlineExceeded
from leanserve.runtimes.onnx import OnnxRuntime
from tests.fixtures.onnx_models import write_mlp, write_slow_model


def test_providers_answer_after_close(tmp_path: Path) -> None:
    """The registry closes a session before it drops the engine; a snapshot taken between (the
    dashboard's sampler during a shutdown or an unload) reads the providers all the same."""
    runtime = OnnxRuntime(write_mlp(tmp_path / "m.onnx"), RuntimeOptions())
    providers = runtime.providers
    runtime.close()
    assert runtime.providers == providers and "CPUExecutionProvider" in providers


def test_a_run_over_runtime_timeout_ms_is_cancelled_with_504_and_the_session_still_serves(tmp_path: Path) -> None:
    path = tmp_path / "slow" / "model.onnx"
    write_slow_model(path, width=512, depth=400)
    runtime = OnnxRuntime(path, RuntimeOptions(intra_op_threads=1, timeout_ms=300))
    small = runtime.run({"x": np.ones((1, 512), np.float32)})  # well within the limit
    assert small["y"].shape == (1, 512)
    start = time.perf_counter()
    with pytest.raises(DeadlineExceeded, match="timeout_ms") as cut:
        runtime.run({"x": np.ones((512, 512), np.float32)})  # 400 MatMuls of 512x512x512: many seconds
    assert cut.value.status == 504
    assert time.perf_counter() - start < 3.0, "cancelled in flight, not when the run finished"
    assert runtime.run({"x": np.ones((1, 512), np.float32)})["y"].shape == (1, 512)
