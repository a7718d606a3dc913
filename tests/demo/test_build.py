from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import pytest

from leanserve.cli import demo as demo_cli
from leanserve.demo import build as build_module
from leanserve.demo import build_demo_repository, default_demo_dir
from leanserve.demo.build import MARKER, MODELS, build_timings, is_built
from leanserve.demo.progress import Progress, StepTimes
from leanserve.errors import UsageError


def _fake_builder(content: str, fail: bool = False) -> build_module.Builder:
    def build(model_dir: Path, progress: Progress, times: StepTimes) -> None:
        with times.step(progress, f"faking {content}"):
            (model_dir / "1").mkdir()
            (model_dir / "1" / "model.onnx").write_text(content)
            np.savez(model_dir / "eval.npz", x=np.zeros(1))
            if fail:
                raise RuntimeError("interrupted")

    return build


@pytest.fixture
def fake(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Replace the real builders; returns the names built, in order."""
    built: list[str] = []

    def builder(name: str) -> build_module.Builder:
        built.append(name)
        return _fake_builder(f"{name} #{len(built)}")

    monkeypatch.setattr(build_module, "_builder", builder)
    return built


def _leftovers(repo: Path) -> list[str]:
    return sorted(p.name for p in repo.iterdir() if p.name.startswith(".") and p.name != ".build.lock")


def test_second_build_reuses_everything(demo_repo: Path) -> None:
    mtimes = {name: (demo_repo / name / "1" / "model.onnx").stat().st_mtime_ns for name in MODELS}
    messages: list[str] = []
    start = time.perf_counter()
    assert build_demo_repository(demo_repo, progress=messages.append) == demo_repo
    assert time.perf_counter() - start < 1.0
    assert messages == [f"{name}: already built in {demo_repo / name}" for name in MODELS]
    assert {name: (demo_repo / name / "1" / "model.onnx").stat().st_mtime_ns for name in MODELS} == mtimes
    assert _leftovers(demo_repo) == []


def test_build_records_step_timings(demo_repo: Path) -> None:
    digits = build_timings(demo_repo / "digits")
    minilm = build_timings(demo_repo / "minilm")
    assert "training digits CNN" in digits and "exporting digits to ONNX" in digits
    assert "exporting minilm to ONNX" in minilm
    assert all(seconds >= 0 for seconds in [*digits.values(), *minilm.values()])


def test_builds_every_model_and_reports_progress(tmp_path: Path, fake: list[str]) -> None:
    messages: list[str] = []
    repo = build_demo_repository(tmp_path / "repo", progress=messages.append)
    assert fake == list(MODELS)
    assert all(is_built(repo / name) for name in MODELS)
    assert "faking digits #1 ..." in messages and any(m.startswith("minilm: built in") for m in messages)
    assert _leftovers(repo) == []


def test_force_replaces_a_built_model(tmp_path: Path, fake: list[str]) -> None:
    repo = build_demo_repository(tmp_path)
    build_demo_repository(repo, force=True)
    assert fake == [*MODELS, *MODELS]
    assert (repo / "digits" / "1" / "model.onnx").read_text() == f"digits #{len(MODELS) + 1}"
    assert _leftovers(repo) == []


def test_an_interrupted_build_leaves_no_model(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(build_module, "_builder", lambda name: _fake_builder(name, fail=True))
    with pytest.raises(RuntimeError, match="interrupted"):
        build_demo_repository(tmp_path)
    assert not (tmp_path / "digits").exists()
    assert _leftovers(tmp_path) == []


def test_stale_staging_folders_are_removed(tmp_path: Path, fake: list[str]) -> None:
    (tmp_path / ".digits.building-dead").mkdir()
    (tmp_path / ".digits.building-dead" / "partial").write_text("x")
    build_demo_repository(tmp_path)
    assert _leftovers(tmp_path) == []


def test_an_older_recipe_is_rebuilt(tmp_path: Path, fake: list[str]) -> None:
    build_demo_repository(tmp_path)
    marker = tmp_path / "digits" / MARKER
    marker.write_text(json.dumps({**json.loads(marker.read_text()), "recipe": 0}))
    build_demo_repository(tmp_path)
    assert fake == [*MODELS, "digits"]


def test_refuses_to_replace_a_model_it_did_not_build(tmp_path: Path, fake: list[str]) -> None:
    (tmp_path / "digits" / "1").mkdir(parents=True)
    (tmp_path / "digits" / "1" / "model.onnx").write_text("someone else's")
    with pytest.raises(UsageError, match="not built by leanserve demo"):
        build_demo_repository(tmp_path)
    assert (tmp_path / "digits" / "1" / "model.onnx").read_text() == "someone else's"


def test_default_demo_dir(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("LEANSERVE_HOME", str(tmp_path / "home"))
    assert default_demo_dir() == tmp_path / "home" / "demo"
    monkeypatch.delenv("LEANSERVE_HOME")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    assert default_demo_dir() == tmp_path / "cache" / "leanserve" / "demo"
    monkeypatch.delenv("XDG_CACHE_HOME")
    assert default_demo_dir() == Path.home() / ".cache" / "leanserve" / "demo"


def test_cli_builds_and_prints_next_steps(demo_repo: Path, capsys: pytest.CaptureFixture[str]) -> None:
    parser = argparse.ArgumentParser()
    demo_cli.register(parser.add_subparsers())
    args = parser.parse_args(["demo", "--repo", str(demo_repo), "--no-serve", "--no-optimize", "--port", "8123"])
    assert args.func(args) == 0
    out = capsys.readouterr().out
    assert "already built" in out
    assert "curl -s http://127.0.0.1:8123/v2/models/digits/infer" in out
    assert "digits" in out and "minilm" in out
    assert f"leanserve serve {demo_repo}" in out
