"""``leanserve optimize``: parses, calls the library, prints, returns an exit code."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

import leanserve.cli
from leanserve.cli import main
from leanserve.config import load_model_config
from tests.optimization.conftest import build_mlp


@pytest.fixture(autouse=True)
def only_optimize(monkeypatch: pytest.MonkeyPatch) -> None:
    # The other sub-commands are not under test here; their modules need not even exist yet.
    monkeypatch.setattr(leanserve.cli, "_COMMANDS", ("optimize",))


@pytest.fixture
def mlp(tmp_path: Path) -> tuple[Path, Path]:
    build_mlp(tmp_path / "mlp.onnx")
    rng = np.random.default_rng(0)
    x = rng.standard_normal((120, 64)).astype(np.float32)
    np.savez(tmp_path / "eval.npz", x=x, labels=rng.integers(0, 10, 120))
    return tmp_path / "mlp.onnx", tmp_path / "eval.npz"


def test_json_summary(mlp: tuple[Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    model, data = mlp
    code = main(
        [
            "optimize",
            str(model),
            "--data",
            str(data),
            "--labels",
            "labels",
            "--metric",
            "cosine",
            "--budget",
            "0.95",
            "--worst",
            "0.5",
            "--repo",
            str(tmp_path / "repo"),
            "--name",
            "mlp",
            "--quick",
            "--json",
            "--variants",
            "ort-fp32-opt,ort-int8-static-minmax-pc",
        ]
    )
    out = capsys.readouterr().out
    assert code == 0
    summary = json.loads(out)  # stdout holds the JSON and nothing else
    assert summary["model"] == "mlp" and summary["metric"] == "cosine"
    assert {v["name"] for v in summary["variants"]} == {"ort-fp32-opt", "ort-int8-static-minmax-pc"}
    assert load_model_config(tmp_path / "repo" / "mlp").default_version == summary["default_version"]


def test_table_summary(mlp: tuple[Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    model, data = mlp
    code = main(
        [
            "optimize",
            str(model),
            "--data",
            str(data),
            "--labels",
            "labels",
            "--budget",
            "100%",
            "--repo",
            str(tmp_path / "repo"),
            "--quick",
            "--variants",
            "ort-int8-dynamic",
            "--no-fallback",
        ]
    )
    out = capsys.readouterr().out
    assert code == 0 and "ort-int8-dynamic" in out and "default_version" in out
    assert (tmp_path / "repo" / "mlp" / "report.html").exists()


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--budget", "lots"], "does not parse"),
        (["--metric", "f1"], "unknown metric"),
        (["--variants", "int4"], "unknown variant"),
        (["--labels", "nope"], "no array named 'nope'"),
    ],
)
def test_usage_errors_exit_2(
    mlp: tuple[Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str], extra: list[str], message: str
) -> None:
    model, data = mlp
    args = ["optimize", str(model), "--data", str(data), "--repo", str(tmp_path / "r")]
    code = main([*args, *(extra if "--labels" in extra else ["--labels", "labels", *extra])])
    err = capsys.readouterr().err
    assert code == 2 and message in err and "error:" in err


def test_missing_model_exits_2(mlp: tuple[Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    _, data = mlp
    assert main(["optimize", str(tmp_path / "no.onnx"), "--data", str(data), "--repo", str(tmp_path)]) == 2
    assert "does not exist" in capsys.readouterr().err


def test_list_variants_needs_nothing_else(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["optimize", "--list-variants"]) == 0
    assert "ov-bf16" in capsys.readouterr().out


def test_model_data_and_repo_are_required(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["optimize", "x.onnx"]) == 2
    assert "needs --data, --repo" in capsys.readouterr().err


def test_groups_add_the_worst_group_to_the_table(
    mlp: tuple[Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    model, data = mlp
    x = np.load(data)["x"]
    np.savez(tmp_path / "grouped.npz", x=x, language=np.array(["ko", "en", "ja"] * (len(x) // 3)))
    args = ["optimize", str(model), "--data", str(tmp_path / "grouped.npz"), "--groups", "language"]
    args += ["--metric", "cosine", "--budget", "0.5", "--repo", str(tmp_path / "repo"), "--quick"]
    assert main([*args, "--variants", "ort-int8-dynamic", "--no-fallback"]) == 0
    out = capsys.readouterr().out
    assert "worst group" in out
    report = json.loads((tmp_path / "repo" / "mlp" / "report.json").read_text())
    worst = min(report["variants"][0]["score"]["groups"].items(), key=lambda item: item[1]["value"])
    assert f"{worst[0]} {worst[1]['value']:.4f}" in out
