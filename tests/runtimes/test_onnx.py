"""The ONNX Runtime engine wrapper."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pytest

from leanserve.config import RuntimeOptions
from leanserve.errors import DeadlineExceeded
from leanserve.runtimes import ENGINE_THREADS_ENV
from leanserve.runtimes import onnx as onnx_runtime
from leanserve.runtimes.onnx import OnnxRuntime, session_options, thread_plan
from leanserve.runtimes.threads import SHORT_SPIN_MICROSECONDS
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


def _spin_entries(options: RuntimeOptions) -> tuple[int, str, str]:
    so = session_options(options)
    try:
        spin = so.get_session_config_entry("session.intra_op.spin_duration_us")
    except RuntimeError:  # not set: ONNX Runtime's own spin
        spin = ""
    return so.intra_op_num_threads, so.get_session_config_entry("session.intra_op.allow_spinning"), spin


def test_session_options_carry_the_thread_plan(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(ENGINE_THREADS_ENV, raising=False)
    monkeypatch.setattr(onnx_runtime, "available_cores", lambda: 2)
    short = str(SHORT_SPIN_MICROSECONDS)
    assert _spin_entries(RuntimeOptions(intra_op_threads=2)) == (2, "1", short)  # no core to spare: a short spin
    assert _spin_entries(RuntimeOptions(intra_op_threads=2, allow_spinning=True)) == (2, "1", "")  # ORT's own
    assert _spin_entries(RuntimeOptions(intra_op_threads=2, allow_spinning=False)) == (2, "0", "")
    monkeypatch.setattr(onnx_runtime, "available_cores", lambda: 8)
    assert _spin_entries(RuntimeOptions(intra_op_threads=2)) == (2, "1", "")  # a core left for the event loop


def test_a_launchers_share_leaves_no_core_to_spare(monkeypatch: pytest.MonkeyPatch) -> None:
    """serve --workers on 16 cores gives each worker 2: its engine takes both, and must not spin without end."""
    monkeypatch.setattr(onnx_runtime, "available_cores", lambda: 16)
    monkeypatch.setenv(ENGINE_THREADS_ENV, "2")
    plan = thread_plan(RuntimeOptions(intra_op_threads=2))
    assert (plan.threads, plan.spinning, plan.spin_microseconds) == (2, True, SHORT_SPIN_MICROSECONDS)
