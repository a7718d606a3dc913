"""`check`: configs parse, signatures match, each version loads and answers a smoke inference."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from leanserve.check import check_repository, smoke_inputs
from leanserve.cli import check as check_command
from leanserve.repository import resolve_version, scan_repository
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
