"""The load generator against a real leanserve server on a free loopback port."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

from leanserve.errors import ClientError
from leanserve.loadgen import TensorSpec, run
from tests.server.conftest import RunningServer

QUICK = {"duration_s": 0.6, "window_s": 0.2, "warmup_s": 0.1}


def test_closed_loop_at_each_concurrency(served: RunningServer) -> None:
    lines: list[str] = []
    report = run(served.url, "mlp", concurrency=[1, 4], progress=lines.append, **QUICK)
    assert [r.concurrency for r in report.results] == [1, 4]
    for r in report.results:
        assert r.model == "mlp" and r.rate is None and r.errors == {}
        assert r.requests > 20 and r.throughput > 0 and r.windows >= 3
        assert 0 < r.p50_ms <= r.p90_ms <= r.p99_ms <= r.p999_ms <= r.max_ms
        # The test server is a thread of this process: its CPU counts in the client's here.
        assert 0 < r.client_cpu < os.cpu_count() + 0.5  # type: ignore[operator]
        assert r.duration_s == pytest.approx(0.2 * r.windows, rel=0.5)
        lo, hi = r.throughput_ci
        assert lo <= hi
    assert any("c4: window 1" in line for line in lines)
    assert report.environment["usable_cores"] >= 1 and "load_average" in report.environment


def test_open_loop_keeps_its_rate(served: RunningServer) -> None:
    report = run(served.url, "mlp", rate=[100.0], arrivals="constant", **QUICK)
    (r,) = report.results
    assert r.rate == 100.0 and r.concurrency is None and r.arrivals == "constant"
    # The schedule is the client's: 100 requests fell due per second. What came back is the server's
    # (a test server sharing a loaded machine may fall behind; then some are left unanswered).
    assert r.offered == pytest.approx(100.0, rel=0.1)
    assert set(r.errors) <= {"unanswered"} and 0 < r.throughput <= 1.1 * r.offered


def test_binary_tensors_and_a_version(served: RunningServer) -> None:
    report = run(served.url, "mlp", version="2", binary=True, concurrency=[2], **QUICK)
    assert report.results[0].errors == {} and report.results[0].requests > 0


def test_inputs_from_an_npz(served: RunningServer, tmp_path: Path) -> None:
    np.savez(tmp_path / "x.npz", x=np.arange(12, dtype=np.float64).reshape(3, 4))
    report = run(served.url, "mlp", data=tmp_path / "x.npz", concurrency=[1], **QUICK)
    assert report.results[0].errors == {}


def test_the_demo_examples(served: RunningServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LEANSERVE_HOME", str(tmp_path))
    (tmp_path / "demo" / "mlp").mkdir(parents=True)
    np.savez(tmp_path / "demo" / "mlp" / "eval.npz", x=np.ones((5, 4), np.float32), labels=np.zeros(5))
    report = run(served.url, "mlp", data="demo", concurrency=[1], **QUICK)
    assert report.results[0].errors == {}


def test_an_experiment_alias_like_any_model(served: RunningServer) -> None:
    report = run(served.url, "ab", concurrency=[2], **QUICK)
    assert report.results[0].model == "ab" and report.results[0].errors == {}


def test_errors_counted_by_status_per_model_in_a_mix(served: RunningServer) -> None:
    x = [TensorSpec("x", "FP32", (-1, 4))]
    report = run(served.url, ["mlp", "missing"], mix="weights:1,1", inputs=x, concurrency=[2], **QUICK)
    by_model = {r.model: r for r in report.results}
    assert set(by_model) == {"mlp", "missing", "mlp,missing"}
    assert by_model["mlp"].errors == {} and by_model["mlp"].throughput > 0
    missing = by_model["missing"]
    assert set(missing.errors) == {"404"} and missing.throughput == 0 and missing.requests == missing.errors["404"]
    whole = by_model["mlp,missing"]
    assert whole.errors == missing.errors and whole.requests == by_model["mlp"].requests + missing.requests
    share = missing.requests / whole.requests
    assert 0.3 < share < 0.7
    assert any("404" in w for w in report.warnings)


def test_a_model_the_server_does_not_know_is_a_client_error(served: RunningServer) -> None:
    with pytest.raises(ClientError, match="missing"):
        run(served.url, "missing", concurrency=[1], **QUICK)
