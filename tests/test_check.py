"""`check`: configs parse, signatures match, each version loads and answers a warm-up inference."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from leanserve import check
from leanserve.check import check_repository, check_version, smoke_inputs
from leanserve.cli import check as check_command
from leanserve.repository import ModelVersionSpec, resolve_version, scan_repository
from leanserve.runtimes import Runtime, threads
from leanserve.runtimes import onnx as onnx_runtime
from leanserve.runtimes.onnx import OnnxRuntime
from tests.fixtures.onnx_models import write_mlp


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    write_mlp(tmp_path / "good" / "1" / "model.onnx")
    write_mlp(tmp_path / "good" / "2" / "model.onnx")
    (tmp_path / "good" / "model.toml").write_text('version_policy = "all"\n')
    return tmp_path


def test_a_good_repository_passes(repo: Path) -> None:
    report = check_repository(repo)
    assert report.ok
    assert [(r.model, r.version) for r in report.results] == [("good", 1), ("good", 2)]
    assert all(r.load_seconds > 0 and r.smoke_latency_ms > 0 for r in report.results)
    assert report.results[0].inputs == "x:FP32[4]"


def test_broken_models_fail_and_good_ones_are_still_listed(repo: Path) -> None:
    (repo / "garbage" / "1").mkdir(parents=True)
    (repo / "garbage" / "1" / "model.onnx").write_bytes(b"\x00not onnx")
    write_mlp(repo / "typo" / "1" / "model.onnx")
    (repo / "typo" / "model.toml").write_text('[[input]]\nname = "x"\ndatatype = "INT32"\n')
    report = check_repository(repo)
    assert not report.ok
    by = {(r.model, r.version): r for r in report.results}
    assert by[("good", 1)].ok and by[("good", 2)].ok
    assert "not a readable ONNX model" in (by[("garbage", 1)].error or "")
    assert "declares INT32 but model.onnx has FP32" in (by[("typo", 1)].error or "")


def test_smoke_inputs_follow_the_signature(repo: Path) -> None:
    (entry,) = scan_repository(repo).models
    spec = resolve_version(entry.directory, entry.config, 1)  # type: ignore[arg-type]
    feed = smoke_inputs(spec)
    assert feed["x"].shape == (1, 4) and feed["x"].dtype == np.float32


def test_cli_prints_a_table_and_exits_zero(repo: Path, capsys: pytest.CaptureFixture[str]) -> None:
    import argparse

    code = check_command.run(argparse.Namespace(repository=repo, json=False))
    out = capsys.readouterr().out
    assert code == 0
    assert "good" in out and "ok" in out


def test_cli_exits_non_zero_with_the_errors(repo: Path, capsys: pytest.CaptureFixture[str]) -> None:
    import argparse

    (repo / "bad").mkdir()
    code = check_command.run(argparse.Namespace(repository=repo, json=True))
    data = json.loads(capsys.readouterr().out)
    assert code == 1
    assert data["ok"] is False
    assert any(r["model"] == "bad" and "no version folder" in r["error"] for r in data["results"])
    assert any(r["model"] == "good" and r["error"] is None for r in data["results"])


def test_leanserve_check_command_end_to_end(repo: Path) -> None:
    import subprocess
    import sys

    done = subprocess.run([sys.executable, "-m", "leanserve", "check", str(repo)], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert "good" in done.stdout


# ---- warm-up ----------------------------------------------------------------------------------


def write_framer(path: Path, frame: int = 400) -> Path:
    """Audio [batch, samples] cut into frames of ``frame`` samples, energy [batch, frames] their means.

    A valid model that ONNX Runtime cannot run on audio shorter than a frame: the Reshape fails
    for the synthetic one-sample input, and succeeds for real audio (a multiple of the frame).
    """
    nodes = [
        helper.make_node("Reshape", ["audio", "frames_shape"], ["frames"]),
        helper.make_node("ReduceMean", ["frames"], ["energy"], axes=[2], keepdims=0),
    ]
    graph = helper.make_graph(
        nodes,
        "framer",
        [helper.make_tensor_value_info("audio", TensorProto.FLOAT, ["batch", "samples"])],
        [helper.make_tensor_value_info("energy", TensorProto.FLOAT, ["batch", "frames"])],
        [numpy_helper.from_array(np.array([0, -1, frame], np.int64), "frames_shape")],
    )
    return _save(graph, path)


def write_single_row(path: Path) -> Path:
    """Declares a batch dimension but reshapes its input to one row: a batch of more rows fails."""
    rng = np.random.default_rng(0)
    nodes = [
        helper.make_node("Reshape", ["x", "one_row"], ["row"]),
        helper.make_node("MatMul", ["row", "w"], ["y"]),
    ]
    graph = helper.make_graph(
        nodes,
        "single_row",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 3])],
        [
            numpy_helper.from_array(np.array([1, 4], np.int64), "one_row"),
            numpy_helper.from_array(rng.normal(size=(4, 3)).astype(np.float32), "w"),
        ],
    )
    return _save(graph, path)


def _save(graph: onnx.GraphProto, path: Path) -> Path:
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    path.parent.mkdir(parents=True, exist_ok=True)
    onnx.save(model, str(path))
    return path


def _spec(repo: Path, name: str) -> ModelVersionSpec:
    entry = next(m for m in scan_repository(repo).models if m.name == name)
    assert entry.config is not None, entry.error
    return resolve_version(entry.directory, entry.config, entry.versions[-1])


class _Recording:
    """A runtime that remembers the shape of every feed it ran."""

    def __init__(self, runtime: Runtime, shapes: list[dict[str, tuple[int, ...]]]) -> None:
        self._runtime = runtime
        self._shapes = shapes

    def run(self, inputs: Mapping[str, np.ndarray], output_names: Sequence[str] | None = None) -> dict[str, np.ndarray]:
        self._shapes.append({name: a.shape for name, a in inputs.items()})
        return self._runtime.run(inputs, output_names)

    def close(self) -> None:
        self._runtime.close()


@pytest.fixture
def runs(monkeypatch: pytest.MonkeyPatch) -> list[dict[str, tuple[int, ...]]]:
    shapes: list[dict[str, tuple[int, ...]]] = []
    real = check.load_runtime
    monkeypatch.setattr(check, "load_runtime", lambda *a: _Recording(real(*a), shapes))
    return shapes


def test_a_model_that_refuses_the_synthetic_input_serves_with_a_warning(tmp_path: Path) -> None:
    write_framer(tmp_path / "audio" / "1" / "model.onnx")
    result, runtime = check_version(_spec(tmp_path, "audio"))
    assert result.ok and runtime is not None  # the registry keeps this engine and serves it
    (warning,) = result.warnings
    assert "rejects the synthetic smoke input (audio [1, 1])" in warning and "Reshape" in warning
    assert str(tmp_path / "audio" / "warmup.npz") in warning
    audio = np.random.default_rng(0).normal(size=(3, 16000)).astype(np.float32)
    assert runtime.run({"audio": audio})["energy"].shape == (3, 40)  # real audio runs
    runtime.close()


def test_warmup_samples_replace_the_synthetic_input_then_the_largest_batch_runs(
    tmp_path: Path, runs: list[dict[str, tuple[int, ...]]]
) -> None:
    write_framer(tmp_path / "audio" / "1" / "model.onnx")
    # Threads set, so that no timing runs for choosing them come between the warm-up runs.
    (tmp_path / "audio" / "model.toml").write_text("max_batch_size = 8\n[runtime]\nintra_op_threads = 1\n")
    np.savez(tmp_path / "audio" / "warmup.npz", audio=np.zeros((2, 800), np.float32))
    result, runtime = check_version(_spec(tmp_path, "audio"))
    assert result.ok and result.warnings == () and result.smoke_latency_ms > 0
    assert runs == [{"audio": (2, 800)}, {"audio": (8, 800)}]  # the samples, then tiled to max_batch_size
    assert runtime is not None
    runtime.close()


def test_a_model_that_does_not_batch_warms_up_once(tmp_path: Path, runs: list[dict[str, tuple[int, ...]]]) -> None:
    write_mlp(tmp_path / "fixed" / "1" / "model.onnx", batch_dynamic=False)
    (tmp_path / "fixed" / "model.toml").write_text("[runtime]\nintra_op_threads = 1\n")
    result, runtime = check_version(_spec(tmp_path, "fixed"))
    assert result.ok and runs == [{"x": (1, 4)}]
    assert runtime is not None
    runtime.close()


def test_a_failing_user_sample_is_an_error(tmp_path: Path) -> None:
    write_framer(tmp_path / "audio" / "1" / "model.onnx")
    np.savez(tmp_path / "audio" / "warmup.npz", audio=np.zeros((1, 401), np.float32))
    result, runtime = check_version(_spec(tmp_path, "audio"))
    assert runtime is None and not result.ok
    assert f"{tmp_path / 'audio' / 'warmup.npz'}: the model fails on these warm-up samples" in (result.error or "")


@pytest.mark.parametrize(
    ("arrays", "message"),
    [
        ({}, "warmup.npz: x: is missing"),
        ({"x": np.zeros((2, 4), np.float32), "y": np.zeros(2)}, "warmup.npz: y: is no input of the model"),
        ({"x": np.zeros((2, 4), np.float64)}, "warmup.npz: x: holds float64, but the input is FP32"),
        ({"x": np.zeros((2, 5), np.float32)}, "warmup.npz: x: has shape [2, 5], expected [rows, 4]"),
        ({"x": np.zeros((9, 4), np.float32)}, "warmup.npz: rows per input (x 9) must be one count in 1..8"),
        ({"x": np.zeros((0, 4), np.float32)}, "rows per input (x 0) must be one count in 1..8"),
    ],
)
def test_warmup_samples_are_checked_against_the_inputs(
    tmp_path: Path, arrays: dict[str, np.ndarray], message: str
) -> None:
    write_mlp(tmp_path / "mlp" / "1" / "model.onnx")
    (tmp_path / "mlp" / "model.toml").write_text("max_batch_size = 8\n")
    np.savez(tmp_path / "mlp" / "warmup.npz", **arrays)  # type: ignore[arg-type]
    result, runtime = check_version(_spec(tmp_path, "mlp"))
    assert runtime is None and message in (result.error or ""), result.error


def test_a_largest_batch_that_fails_is_a_warning(tmp_path: Path) -> None:
    write_single_row(tmp_path / "one" / "1" / "model.onnx")
    result, runtime = check_version(_spec(tmp_path, "one"))
    assert result.ok and runtime is not None
    (warning,) = result.warnings
    assert warning.startswith("a batch of 32 rows (max_batch_size) fails") and "lower max_batch_size" in warning
    runtime.close()


def test_cli_prints_warnings_and_still_exits_zero(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    import argparse

    write_framer(tmp_path / "audio" / "1" / "model.onnx")
    assert check_command.run(argparse.Namespace(repository=tmp_path, json=False)) == 0
    out = " ".join(capsys.readouterr().out.split())  # as rich wrapped it, unwrapped
    assert "ok, 1" in out and "warning audio version 1: the model rejects the synthetic" in out
    assert check_command.run(argparse.Namespace(repository=tmp_path, json=True)) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["ok"] is True and "rejects the synthetic" in data["results"][0]["warnings"][0]


# ---- threads chosen from the measured cost ------------------------------------------------------


def test_a_light_model_without_threads_in_model_toml_gets_one_thread_without_spinning(tmp_path: Path) -> None:
    write_mlp(tmp_path / "tiny" / "1" / "model.onnx")
    result, runtime = check_version(_spec(tmp_path, "tiny"))
    assert result.ok and isinstance(runtime, OnnxRuntime)
    assert (runtime.options.intra_op_threads, runtime.options.allow_spinning) == (1, False)
    assert runtime.run({"x": np.ones((3, 4), np.float32)})["y"].shape[0] == 3  # the reloaded engine serves
    runtime.close()


def test_a_heavy_model_keeps_the_cores(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(threads, "LIGHT_SECONDS", 0.0)  # every model measures heavy
    monkeypatch.setattr(check, "available_cores", lambda: 4)
    monkeypatch.setattr(onnx_runtime, "available_cores", lambda: 4)
    write_mlp(tmp_path / "big" / "1" / "model.onnx")
    result, runtime = check_version(_spec(tmp_path, "big"))
    assert result.ok and isinstance(runtime, OnnxRuntime)
    assert (runtime.options.intra_op_threads, runtime.options.allow_spinning) == (3, True)
    runtime.close()


def test_threads_and_spinning_in_model_toml_are_kept(tmp_path: Path) -> None:
    write_mlp(tmp_path / "set" / "1" / "model.onnx")
    (tmp_path / "set" / "model.toml").write_text("[runtime]\nintra_op_threads = 2\nallow_spinning = true\n")
    result, runtime = check_version(_spec(tmp_path, "set"))
    assert result.ok and isinstance(runtime, OnnxRuntime)
    assert (runtime.options.intra_op_threads, runtime.options.allow_spinning) == (2, True)
    runtime.close()


def test_a_heavy_model_keeps_the_share_a_launcher_set(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LEANSERVE_ENGINE_THREADS", "2")  # as serve --workers, Ray or a pod set it
    write_mlp(tmp_path / "light" / "1" / "model.onnx")
    result, runtime = check_version(_spec(tmp_path, "light"))
    assert result.ok and isinstance(runtime, OnnxRuntime) and runtime.options.intra_op_threads == 1
    runtime.close()
    monkeypatch.setattr(threads, "LIGHT_SECONDS", 0.0)
    result, runtime = check_version(_spec(tmp_path, "light"))
    assert result.ok and isinstance(runtime, OnnxRuntime) and runtime.options.intra_op_threads == 2
    runtime.close()
