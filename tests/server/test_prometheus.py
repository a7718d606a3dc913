"""A real Prometheus (Debian's package) scrapes a live leanserve: its series arrive and its queries answer.

Also every query of the shipped Grafana dashboard (deploy/grafana/leanserve.json) is evaluated by
that Prometheus, so the dashboard cannot name a series or a function that does not exist.
"""

from __future__ import annotations

import json
import math
import re
import shutil
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.support import free_port

from .conftest import RunningServer

PROMETHEUS = shutil.which("prometheus")
GRAFANA = Path(__file__).resolve().parents[2] / "deploy" / "grafana" / "leanserve.json"
GOOD = {"inputs": [{"name": "x", "shape": [1, 4], "datatype": "FP32", "data": [1, 2, 3, 4]}]}
P99 = "histogram_quantile(0.99, sum by (le) (rate(leanserve_request_duration_seconds_bucket[30s])))"

pytestmark = pytest.mark.skipif(
    PROMETHEUS is None, reason="Debian's prometheus is not installed and could not be (make system-deps installs it)"
)


@pytest.fixture(scope="module")
def traffic(server: RunningServer) -> Iterator[None]:
    """Requests, some of them bad, flowing until the tests end (at most 2 minutes)."""
    stop = threading.Event()

    def send() -> None:
        deadline = time.monotonic() + 120
        with httpx.Client(base_url=server.url) as client:
            while not stop.is_set() and time.monotonic() < deadline:
                client.post("/v2/models/mlp/infer", json=GOOD)
                client.post("/v2/models/mlp/infer", content=b"{bad")
                client.post("/v2/models/ghost/infer", json=GOOD)  # unrouted
                time.sleep(0.01)

    thread = threading.Thread(target=send, daemon=True)
    thread.start()
    yield
    stop.set()
    thread.join(timeout=10)


@pytest.fixture(scope="module")
def prometheus(server: RunningServer, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    assert PROMETHEUS is not None
    tmp_path = tmp_path_factory.mktemp("prometheus")
    port = free_port()
    config = tmp_path / "prometheus.yml"
    config.write_text(
        "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\n"
        "scrape_configs:\n  - job_name: leanserve\n    static_configs:\n"
        f"      - targets: ['127.0.0.1:{server.port}']\n"
    )
    log = (tmp_path / "prometheus.log").open("wb")
    process = subprocess.Popen(
        [
            PROMETHEUS,
            f"--config.file={config}",
            f"--storage.tsdb.path={tmp_path / 'data'}",
            f"--web.listen-address=127.0.0.1:{port}",
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        _wait_for(lambda: _ready(url), 30, f"prometheus at {url} (see {tmp_path / 'prometheus.log'})")
        yield url
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
        log.close()


def _ready(url: str) -> bool:
    try:
        return httpx.get(f"{url}/-/ready", timeout=1).status_code == 200
    except httpx.TransportError:
        return False


def _wait_for(check: Any, seconds: float, what: str) -> Any:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        time.sleep(0.5)
    raise TimeoutError(f"waited {seconds:g} s for {what}")


def query(prometheus: str, expr: str) -> list[dict[str, Any]]:
    answer = httpx.get(f"{prometheus}/api/v1/query", params={"query": expr}, timeout=10).json()
    assert answer["status"] == "success", f"{expr}: {answer}"
    result: list[dict[str, Any]] = answer["data"]["result"]
    return result


def test_prometheus_scrapes_leanserve_and_its_quantile_query_answers(prometheus: str, traffic: None) -> None:
    _wait_for(lambda: query(prometheus, 'up{job="leanserve"} == 1'), 30, "a successful scrape")
    names = httpx.get(f"{prometheus}/api/v1/label/__name__/values", timeout=10).json()["data"]
    for name in (
        "leanserve_requests_total",
        "leanserve_responses_total",
        "leanserve_request_duration_seconds_bucket",
        "leanserve_queue_duration_seconds_bucket",
        "leanserve_compute_duration_seconds_bucket",
        "leanserve_batch_size_bucket",
        "leanserve_model_ready",
        "leanserve_memory_used_bytes",
    ):
        assert name in names, name
    ready = query(prometheus, 'leanserve_model_ready{model="mlp"}')
    assert ready and ready[0]["value"][1] == "1"

    def p99() -> float | None:
        result = query(prometheus, P99)
        value = float(result[0]["value"][1]) if result else math.nan
        return value if math.isfinite(value) else None  # NaN until two scrapes saw requests

    seconds = _wait_for(p99, 60, "a p99 from the request histogram")
    assert 0 < seconds < 10
    codes = {r["metric"]["code"] for r in query(prometheus, 'leanserve_responses_total{model="mlp"} > 0')}
    assert {"200", "400"} <= codes


def grafana_queries() -> list[str]:
    dashboard = json.loads(GRAFANA.read_text(encoding="utf-8"))
    return [t["expr"] for p in dashboard["panels"] for t in p.get("targets", [])]


def test_every_grafana_query_evaluates(prometheus: str, traffic: None) -> None:
    _wait_for(lambda: query(prometheus, 'up{job="leanserve"} == 1'), 30, "a successful scrape")
    time.sleep(2)  # a second scrape, for rate()
    for expr in grafana_queries():
        concrete = expr.replace("$__rate_interval", "30s").replace("$model", ".*")
        assert "$" not in concrete, expr
        query(prometheus, concrete)  # fails the test on a parse or evaluation error
    used = set(re.findall(r"\b(leanserve_\w+|process_\w+)", " ".join(grafana_queries())))
    exported = set(httpx.get(f"{prometheus}/api/v1/label/__name__/values", timeout=10).json()["data"])
    # Without a memory budget the budget gauge is absent; every other series must exist.
    assert used - exported <= {"leanserve_memory_budget_bytes"}, used - exported
