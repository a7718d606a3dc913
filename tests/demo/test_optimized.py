"""The demo repository after `optimize`: real variants, reports, and the chosen version served by default."""

from __future__ import annotations

import json
import shutil
import tomllib
from pathlib import Path

import httpx
import numpy as np
import pytest

from leanserve.demo import digits_example
from leanserve.demo.optimized import optimize_demo_repository
from tests.server.conftest import RunningServer


@pytest.fixture(scope="module")
def optimized(demo_repo: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    repo = tmp_path_factory.mktemp("optimized")
    shutil.copytree(demo_repo / "digits", repo / "digits")
    lines = optimize_demo_repository(repo, models=("digits",), quick=True)
    assert lines and lines[0].startswith("digits:")
    return repo


def test_variants_and_reports_are_written(optimized: Path) -> None:
    digits = optimized / "digits"
    report = json.loads((digits / "report.json").read_text())
    assert (digits / "report.html").read_text().lower().startswith("<!doctype html>")
    assert len(report["variants"]) >= 3
    config = tomllib.loads((digits / "model.toml").read_text())
    default = config["default_version"]
    assert (digits / str(default)).is_dir()
    provenance = config["versions"][str(default)]["provenance"]
    assert provenance["source_sha256"] and provenance["method"]


def test_the_chosen_version_is_served_by_default(optimized: Path) -> None:
    config = tomllib.loads((optimized / "digits" / "model.toml").read_text())
    server = RunningServer(optimized).start()
    try:
        example = digits_example(optimized)
        body = {
            "inputs": [
                {"name": "image", "datatype": "FP32", "shape": [1, 1, 8, 8], "data": example.image.ravel().tolist()}
            ]
        }
        r = httpx.post(f"{server.url}/v2/models/digits/infer", json=body)
        assert r.status_code == 200, r.text
        assert r.json()["model_version"] == str(config["default_version"])
        logits = next(o for o in r.json()["outputs"] if o["name"] == "logits")
        assert int(np.argmax(logits["data"])) == example.label
    finally:
        server.stop()


def test_every_version_takes_as_many_rows_as_the_model_allows(optimized: Path) -> None:
    # The sweep's best batch steers the batcher; it must not shrink what a client may send.
    config = tomllib.loads((optimized / "digits" / "model.toml").read_text())
    rows = config["max_batch_size"]
    images = np.repeat(digits_example(optimized).image, rows, axis=0)
    body = {
        "inputs": [{"name": "image", "datatype": "FP32", "shape": list(images.shape), "data": images.ravel().tolist()}]
    }
    server = RunningServer(optimized).start()
    try:
        for version in config["version_policy"]["versions"]:
            r = httpx.post(f"{server.url}/v2/models/digits/versions/{version}/infer", json=body)
            assert r.status_code == 200, (version, r.text)
            assert r.json()["outputs"][0]["shape"][0] == rows
    finally:
        server.stop()


def test_minilm_is_judged_per_language_korean_included(demo_repo: Path, tmp_path: Path) -> None:
    shutil.copytree(demo_repo / "minilm", tmp_path / "minilm")
    optimize_demo_repository(tmp_path, models=("minilm",), quick=True, variants=["ort-int8-dynamic-matmul-pc"])
    report = json.loads((tmp_path / "minilm" / "report.json").read_text())
    with np.load(demo_repo / "minilm" / "eval.npz") as data:
        languages = set(data["language"].tolist())
    variant = report["variants"][0]
    groups = variant["score"]["groups"]
    assert "ko" in groups and set(groups) <= languages and len(groups) >= 3
    assert min(g["worst"] for g in groups.values()) == pytest.approx(variant["score"]["worst"])
    assert "cosine per group" in (tmp_path / "minilm" / "report.html").read_text()
