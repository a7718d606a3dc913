"""The whole protocol as an ASGI app under uvicorn (how Ray Serve or any ASGI host runs leanserve)."""

from __future__ import annotations

import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import numpy as np
import pytest
import tritonclient.http as httpclient

from tests.fixtures.onnx_models import write_slow_affine
from tests.support import free_port, wait_until_ready


def test_uvicorn_serves_the_same_protocol(repository: Path) -> None:
    port = free_port()
    code = (
        "import uvicorn, sys; from pathlib import Path; from leanserve.server import asgi_app; "
        f"uvicorn.run(asgi_app(Path({str(repository)!r})), host='127.0.0.1', port={port}, log_level='warning')"
    )
    proc = subprocess.Popen([sys.executable, "-c", code])
    try:
        wait_until_ready(f"http://127.0.0.1:{port}")
        client = httpclient.InferenceServerClient(f"127.0.0.1:{port}")
        x = np.ones((2, 4), np.float32)
        inp = httpclient.InferInput("x", [2, 4], "FP32")
        inp.set_data_from_numpy(x)
        result = client.infer("mlp", [inp], model_version="1")
        assert result.as_numpy("y").shape == (2, 3)
        r = httpx.post(f"http://127.0.0.1:{port}/v2/models/nope/infer", json={"inputs": []})
        assert r.status_code == 404 and "unknown model" in r.json()["error"]
        r = httpx.get(f"http://127.0.0.1:{port}/v2/models/..%2F..%2Fetc/ready")
        assert r.status_code == 400 and "invalid model name" in r.json()["error"]
        assert "leanserve_requests_total" in httpx.get(f"http://127.0.0.1:{port}/metrics").text
    finally:
        proc.terminate()
        # uvicorn shuts down gracefully, then re-raises the signal it caught.
        assert proc.wait(timeout=30) in (0, -15)


@pytest.mark.slow
def test_under_uvicorn_a_client_that_hangs_up_is_dropped_before_the_engine(tmp_path: Path) -> None:
    write_slow_affine(tmp_path / "slow" / "1" / "model.onnx", side=4096)  # a second or more a run
    (tmp_path / "slow" / "model.toml").write_text(
        "max_batch_size = 8\n[dynamic_batching]\nadaptive_batch_size = false\n[runtime]\nintra_op_threads = 1\n"
    )
    port = free_port()
    code = (
        "import uvicorn, sys; from pathlib import Path; from leanserve.server import asgi_app; "
        f"uvicorn.run(asgi_app(Path({str(tmp_path)!r})), host='127.0.0.1', port={port}, log_level='warning')"
    )
    proc = subprocess.Popen([sys.executable, "-c", code])
    url = f"http://127.0.0.1:{port}/v2/models/slow/infer"
    body = {"inputs": [{"name": "x", "datatype": "FP32", "shape": [1, 4], "data": [1, 2, 3, 4]}]}
    try:
        wait_until_ready(f"http://127.0.0.1:{port}")
        stats = f"http://127.0.0.1:{port}/v2/models/slow/stats"
        httpx.post(url, json=body, timeout=30)  # measured once: the next runs off the event loop
        before = httpx.get(stats).json()["model_stats"][0]
        with ThreadPoolExecutor(1) as pool:
            blocker = pool.submit(httpx.post, url, json=body, timeout=30)
            time.sleep(0.2)
            with pytest.raises(httpx.ReadTimeout):
                httpx.post(url, json=body, timeout=0.5)  # queued behind the blocker, then hangs up
            assert blocker.result().status_code == 200
        time.sleep(0.5)
        after = httpx.get(stats).json()["model_stats"][0]
        assert after["dropped"]["disconnected"] - before["dropped"]["disconnected"] == 1
        assert after["execution_count"] - before["execution_count"] == 1, "only the blocker ran"
    finally:
        proc.terminate()
        assert proc.wait(timeout=30) in (0, -15)
