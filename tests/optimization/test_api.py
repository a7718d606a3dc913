"""End to end: optimize a real CNN and an MLP, then check the repository, the guard, the report."""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
import pytest

from leanserve.config import load_model_config
from leanserve.errors import UsageError
from leanserve.optimization import OptimizeResult, optimize
from leanserve.optimization.writer import tomlable
from leanserve.runtimes import load_runtime

from .conftest import ModelFixture

DIGITS_VARIANTS = ["ort-fp32-opt", "ort-int8-dynamic", "ort-int8-static-minmax-pt"]


@pytest.fixture(scope="module")
def digits_result(digits: ModelFixture, tmp_path_factory: pytest.TempPathFactory) -> OptimizeResult:
    repo = tmp_path_factory.mktemp("repo")
    return optimize(
        digits.model,
        data=digits.data,
        labels="labels",
        budget="1%",
        repo=repo,
        name="digits",
        variants=DIGITS_VARIANTS,
        quick=True,
    )


def test_chosen_version_is_the_default_version(digits_result: OptimizeResult) -> None:
    r = digits_result
    config = load_model_config(r.repository / "digits")
    assert config.default_version == r.default_version
    chosen = r.variant(r.chosen)
    assert chosen.version == r.default_version
    assert config.versions[r.default_version].label == r.chosen
    assert config.versions[r.original.version or 0].provenance["method"] == "original"
    # The default is also the highest version written, so a "latest" policy serves it too.
    assert r.default_version == max(v.version for v in [r.original, *r.variants] if v.version)
    served = config.for_version(r.default_version)
    assert (r.repository / "digits" / str(r.default_version) / served.model_filename()).exists()


def test_variants_are_judged_and_int8_static_keeps_accuracy(digits_result: OptimizeResult) -> None:
    r = digits_result
    assert r.original.score is not None and r.original.score.value > 0.9
    static = r.variant("ort-int8-static-minmax-pt")
    assert static.status == "accepted" and static.score is not None
    assert static.score.value >= r.original.score.value - 0.01
    assert static.measurements is not None and r.original.measurements is not None
    assert static.measurements.file_size_bytes < 0.5 * r.original.measurements.file_size_bytes
    assert r.split.calibration_examples + r.split.evaluation_examples == 597
    for v in r.variants:
        assert v.status in ("accepted", "rejected"), v.reason
        assert v.plan is None or v.plan.threads >= 1


def test_provenance(digits_result: OptimizeResult) -> None:
    r = digits_result
    config = load_model_config(r.repository / "digits")
    written = {v.version: v for v in [r.original, *r.variants] if v.version is not None}
    assert set(config.versions) == set(written) and r.original.version in written
    # A variant is written beside the original only when one measured faster: on digits the
    # variants and the original run within noise of each other, so which wins is the machine's call.
    assert len(written) >= (1 if r.served_original else 2)
    for version, o in config.versions.items():
        v, p = written[version], o.provenance
        assert o.label == p["variant"] == v.name and p["method"] == v.method
        assert p["source_sha256"] == r.source.sha256
        assert p["metric"] == "accuracy" and p["metric_value"] == pytest.approx(v.score.value if v.score else None)
        assert p["budget"] == "1%" and p["evaluation_examples"] == r.split.evaluation_examples
        # Everything the variant's builder recorded, as model.toml holds it.
        assert p.get("settings", {}) == tomlable({k: x for k, x in v.settings.items() if k != "method"})
    # The static variant's calibration is recorded whether or not it was kept as a version.
    static = r.variant("ort-int8-static-minmax-pt").settings
    assert static["method"] == "int8-static" and static["calibration"] == "minmax"
    assert static["calibration_examples"] == r.split.calibration_examples


def test_reports_are_written(digits_result: OptimizeResult) -> None:
    data = json.loads((digits_result.repository / "digits" / "report.json").read_text())
    assert data["chosen"] == digits_result.chosen and len(data["variants"]) == len(DIGITS_VARIANTS)
    assert 1 <= data["environment"]["usable_cores"] <= data["environment"]["logical_cores"]
    page = (digits_result.repository / "digits" / "report.html").read_text()
    assert (
        page.count("<svg") == 2
        and "<script" not in page
        and "http://" not in page.replace('xmlns="http://www.w3.org/2000/svg"', "")
    )


def test_report_figures_come_from_measurement(digits_result: OptimizeResult, digits: ModelFixture) -> None:
    r = digits_result
    chosen = r.variant(r.chosen)
    assert chosen.measurements is not None
    config = load_model_config(r.repository / "digits").for_version(r.default_version)
    runtime = load_runtime(
        r.repository / "digits" / str(r.default_version) / config.model_filename(), config.platform, config.runtime
    )
    feed = {"image": np.load(digits.data)["image"][:1]}
    for _ in range(20):
        runtime.run(feed)
    samples = []
    for _ in range(200):
        t0 = time.perf_counter()
        runtime.run(feed)
        samples.append((time.perf_counter() - t0) * 1000)
    direct = float(np.median(samples))
    reported = chosen.measurements.latency.p50_ms
    # A loose factor: the machine is shared, but an invented figure would be far off.
    assert direct / 4 < reported < direct * 4, (direct, reported)
    spread = chosen.measurements.latency.rounds_ms
    assert spread.min <= spread.median <= spread.max


def test_guard_rejects_past_a_tight_budget_and_serves_the_original(mlp: ModelFixture, tmp_path: Path) -> None:
    r = optimize(
        mlp.model,
        data=mlp.data,
        metric="mae",
        budget="1e-7",
        repo=tmp_path,
        name="mlp",
        variants=["ort-int8-dynamic", "ort-int8-static-minmax-pt"],
        quick=True,
        fallback=False,
    )
    for v in r.variants:
        assert v.status == "rejected" and v.version is None and "never served" in v.reason
        assert v.score is not None and v.score.value > 1e-7
    assert r.served_original and r.chosen == "original"
    assert "original model is served" in r.message
    config = load_model_config(tmp_path / "mlp")
    assert config.default_version == r.original.version
    assert {o.label for o in config.versions.values()} == {"original"}


def test_fallback_reports_nodes_kept_in_float(mlp: ModelFixture, tmp_path: Path) -> None:
    r = optimize(
        mlp.model,
        data=mlp.data,
        metric="max_error",
        budget="0",
        repo=tmp_path,
        name="mlp",
        variants=["ort-int8-static-minmax-pt"],
        quick=True,
    )
    static = r.variant("ort-int8-static-minmax-pt")
    assert static.status == "rejected" and static.fallback is not None
    assert static.fallback.steps and static.fallback.kept_in_float
    assert static.fallback.kept_in_float[0].added_error >= static.fallback.kept_in_float[-1].added_error
    assert static.fallback.outcome


def test_cosine_with_worst_floor(mlp: ModelFixture, tmp_path: Path) -> None:
    r = optimize(
        mlp.model,
        data=mlp.data,
        metric="cosine",
        budget="0.9",
        worst="0.5",
        repo=tmp_path,
        name="mlp",
        variants=["ort-int8-static-minmax-pc"],
        quick=True,
    )
    v = r.variant("ort-int8-static-minmax-pc")
    assert v.status == "accepted" and v.score is not None and v.score.worst is not None
    assert 0.9 < v.score.value <= 1.0 and v.score.worst <= v.score.value


def test_bad_input_is_a_clear_error(mlp: ModelFixture, tmp_path: Path) -> None:
    with pytest.raises(UsageError, match="does not exist"):
        optimize(tmp_path / "nope.onnx", data=mlp.data, repo=tmp_path)
    with pytest.raises(UsageError, match="does not exist"):
        optimize(mlp.model, data=tmp_path / "nope.npz", repo=tmp_path)
    np.savez(tmp_path / "wrong.npz", image=np.zeros((10, 64), np.float32))
    with pytest.raises(UsageError, match="does not match the model"):
        optimize(mlp.model, data=tmp_path / "wrong.npz", repo=tmp_path)
    with pytest.raises(UsageError, match="does not parse"):
        optimize(mlp.model, data=mlp.data, budget="one percent", repo=tmp_path)
    with pytest.raises(UsageError, match="unknown objective"):
        optimize(mlp.model, data=mlp.data, repo=tmp_path, objective="cheapest")


def test_figures_per_group_in_the_result_and_both_reports(mlp: ModelFixture, tmp_path: Path) -> None:
    x = np.load(mlp.data)["x"]
    segment = np.where(np.arange(len(x)) % 3 == 0, "rare", "common")
    r = optimize(
        mlp.model,
        data={"x": x, "segment": segment},
        groups="segment",
        metric="cosine",
        budget="0.9",
        repo=tmp_path,
        name="mlp",
        variants=["ort-int8-dynamic"],
        quick=True,
        fallback=False,
    )
    v = r.variant("ort-int8-dynamic")
    assert v.score is not None and set(v.score.groups) == {"common", "rare"}
    for group in v.score.groups.values():
        assert group.worst is not None and v.score.worst is not None
        assert v.score.worst <= group.worst <= group.value <= 1.0
    low, high = sorted(g.value for g in v.score.groups.values())
    assert low <= v.score.value <= high
    assert r.original.score is not None and r.original.score.groups["rare"].value == pytest.approx(1.0)

    report = json.loads((tmp_path / "mlp" / "report.json").read_text())
    figures = next(x for x in report["variants"] if x["name"] == "ort-int8-dynamic")["score"]["groups"]
    assert figures["rare"]["value"] == pytest.approx(v.score.groups["rare"].value)
    page = (tmp_path / "mlp" / "report.html").read_text()
    assert "cosine per group" in page and "<th>rare</th>" in page
