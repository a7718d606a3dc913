"""Six models well over the memory budget, driven by concurrent clients against a real server process.

The server's resident memory is sampled from outside, as an operator's monitoring sees it.
"""

from __future__ import annotations

import re
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import pytest

from leanserve.memory import resident_bytes
from tests.fixtures.onnx_models import write_marked_model
from tests.support import free_port, wait_until_ready

MIB = 1 << 20
BUDGET = 100 * MIB
MODELS = 6
# Besides the budget and one load in progress, what serving itself may add to the process
# (connection buffers, request objects, Python's own heap).
SERVING_SLACK = 24 * MIB


def metric(text: str, name: str) -> float:
    match = re.search(rf"^{name} ([0-9.e+]+)$", text, re.M)
    assert match, f"{name} missing from /metrics"
    return float(match.group(1))


@pytest.mark.slow
def test_six_models_over_budget_every_request_right_and_memory_bounded(tmp_path: Path) -> None:
    for i in range(MODELS):
        write_marked_model(tmp_path / f"m{i}" / "1" / "model.onnx", marker=float(i + 1), weight_mib=40)
        (tmp_path / f"m{i}" / "model.toml").write_text("[runtime]\nintra_op_threads = 1\n")
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    proc = subprocess.Popen(
        [sys.executable, "-m", "leanserve", "serve", str(tmp_path), "--port", str(port), "--load", "on_demand",
         "--memory-budget", f"{BUDGET // MIB}MiB", "--log-level", "warning"],
    )  # fmt: skip
    peak = 0
    stop = threading.Event()

    def sample() -> None:
        nonlocal peak
        while not stop.is_set():
            peak = max(peak, resident_bytes(proc.pid))
            time.sleep(0.01)

    sampler = threading.Thread(target=sample)
    errors: list[str] = []
    try:
        wait_until_ready(url)
        sampler.start()

        def client(offset: int) -> None:
            with httpx.Client(base_url=url, timeout=60) as http:
                for n in range(24):
                    i = (offset + n) % MODELS
                    body = {"inputs": [{"name": "x", "shape": [1, 4], "datatype": "FP32", "data": [1, 2, 3, 4]}]}
                    r = http.post(f"/v2/models/m{i}/infer", json=body)
                    if r.status_code != 200:
                        errors.append(f"m{i}: {r.status_code} {r.text}")
                    elif r.json()["outputs"][0]["data"] != [float(i + 1)]:
                        errors.append(f"m{i} answered by the wrong model: {r.json()}")

        clients = [threading.Thread(target=client, args=(k,)) for k in range(4)]
        for c in clients:
            c.start()
        for c in clients:
            c.join()
        stop.set()
        sampler.join()
        text = httpx.get(f"{url}/metrics").text
        index = httpx.post(f"{url}/v2/repository/index").json()
    finally:
        stop.set()
        proc.terminate()
        proc.wait(timeout=30)
    assert errors == []
    sizes = [e["memory_bytes"] for e in index]
    assert all(s > 40 * MIB for s in sizes), sizes  # every model was measured, at least its weights
    assert sum(sizes) > 1.5 * BUDGET  # the models really are well over the budget
    assert metric(text, "leanserve_evictions_total") >= MODELS
    assert metric(text, "leanserve_memory_used_bytes") <= BUDGET
    baseline = metric(text, "leanserve_memory_baseline_bytes")
    allowed = baseline + BUDGET + max(sizes) + SERVING_SLACK
    assert peak <= allowed, f"peak {peak / MIB:.0f} MiB over {allowed / MIB:.0f} (baseline {baseline / MIB:.0f})"
    assert proc.returncode == 0
