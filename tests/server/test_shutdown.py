"""SIGTERM/SIGINT: stop accepting, let in-flight requests finish, exit 0."""

from __future__ import annotations

import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from tests.support import free_port, wait_until_ready


def write_slow_model(path: Path, width: int = 1024, depth: int = 200) -> None:
    """A chain of ``depth`` MatMuls sharing one weight: slow enough to be caught in flight."""
    w = numpy_helper.from_array(np.eye(width, dtype=np.float32), "w")
    nodes = []
    prev = "x"
    for i in range(depth):
        out = "y" if i == depth - 1 else f"h{i}"
        nodes.append(helper.make_node("MatMul", [prev, "w"], [out]))
        prev = out
    graph = helper.make_graph(
        nodes,
        "slow",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", width])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", width])],
        [w],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    path.parent.mkdir(parents=True)
    onnx.save(model, path)


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_signal_lets_in_flight_requests_finish_and_exits_zero(tmp_path: Path, sig: signal.Signals) -> None:
    write_slow_model(tmp_path / "slow" / "1" / "model.onnx")
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "leanserve", "serve", str(tmp_path), "--port", str(port)],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    try:
        wait_until_ready(f"http://127.0.0.1:{port}", timeout=60)
        x = np.ones((32, 1024), np.float32)
        body = {"inputs": [{"name": "x", "datatype": "FP32", "shape": [32, 1024], "data": x.ravel().tolist()}]}
        start = time.perf_counter()
        r0 = httpx.post(f"http://127.0.0.1:{port}/v2/models/slow/infer", json=body, timeout=60)
        single = time.perf_counter() - start
        assert r0.status_code == 200

        results: list[httpx.Response] = []
        t = threading.Thread(
            target=lambda: results.append(
                httpx.post(f"http://127.0.0.1:{port}/v2/models/slow/infer", json=body, timeout=60)
            )
        )
        t.start()
        time.sleep(min(0.2, single / 3) + 0.05)  # the request is in flight now
        proc.send_signal(sig)
        t.join(timeout=60)
        assert results and results[0].status_code == 200, "the in-flight request was answered"
        assert proc.wait(timeout=30) == 0
        with pytest.raises(httpx.ConnectError):
            httpx.get(f"http://127.0.0.1:{port}/v2/health/live", timeout=2)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
