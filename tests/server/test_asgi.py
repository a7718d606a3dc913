"""The whole protocol as an ASGI app under uvicorn (how Ray Serve or any ASGI host runs leanserve)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import httpx
import numpy as np
import tritonclient.http as httpclient

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
