"""``leanserve deploy``: a thin command over leanserve.deploy; wrong values are usage errors (exit 2)."""

from __future__ import annotations

from pathlib import Path

import pytest

from leanserve.cli import main
from tests.fixtures.onnx_models import write_mlp


def test_deploy_k8s_measures_and_writes(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    write_mlp(tmp_path / "models" / "mlp" / "1" / "model.onnx")
    argv = ["deploy", "k8s", str(tmp_path / "models"), "--image", "r.example/ls:1", "--out", str(tmp_path / "out")]
    assert main([*argv, "--memory-budget", "1GiB", "--workers", "2"]) == 0
    printed = capsys.readouterr().out
    assert "measured: server" in printed and "mlp" in printed
    assert (tmp_path / "out" / "leanserve.yaml").is_file() and (tmp_path / "out" / "Dockerfile.cuda").is_file()
    assert main([*argv, "--min-replicas", "3", "--max-replicas", "2"]) == 2
    assert "replicas" in capsys.readouterr().err


def test_deploy_kserve_needs_a_storage_uri(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as e:
        main(["deploy", "kserve", str(tmp_path), "--image", "i", "--out", str(tmp_path / "o")])
    assert e.value.code == 2 and "--storage-uri" in capsys.readouterr().err


def test_serve_ray_refuses_what_ray_does_itself(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["serve", str(tmp_path), "--ray", "--workers", "2"]) == 2
    assert "--ray" in capsys.readouterr().err
    assert main(["serve", str(tmp_path), "--address", "auto"]) == 2
    assert "--address is for --ray" in capsys.readouterr().err
