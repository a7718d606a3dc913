"""leanserve on a local Ray Serve: the same protocol through the ingress, replicas, experiments."""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import numpy as np
import onnxruntime as ort
import pytest
import tritonclient.http as httpclient

from tests.ray.conftest import RayApp

pytestmark = pytest.mark.slow


def direct(repo: Path, model: str, version: int, x: np.ndarray) -> np.ndarray:
    session = ort.InferenceSession(str(repo / model / str(version) / "model.onnx"), providers=["CPUExecutionProvider"])
    out: np.ndarray = session.run(["y"], {"x": x})[0]
    return out


def test_tritonclient_through_the_ingress_equals_the_model_run_directly(ray_app: RayApp) -> None:
    client = httpclient.InferenceServerClient(ray_app.url.removeprefix("http://"))
    x = np.arange(12, dtype=np.float32).reshape(3, 4) / 7
    for model, version in (("mlp", 1), ("mlp", 2), ("solo", 1)):
        given = httpclient.InferInput("x", [3, 4], "FP32")
        given.set_data_from_numpy(x)  # binary tensor data, tritonclient's default
        result = client.infer(model, [given], model_version=str(version))
        np.testing.assert_allclose(result.as_numpy("y"), direct(ray_app.repository, model, version, x), rtol=1e-5)
    assert client.is_server_ready() and client.is_model_ready("mlp")
    assert client.get_model_metadata("solo")["name"] == "solo"
    missing = httpx.post(f"{ray_app.url}/v2/models/nope/infer", json={"inputs": []}, timeout=30)
    assert missing.status_code == 404 and "error" in missing.json()
    bad = httpx.post(f"{ray_app.url}/v2/models/mlp/infer", content=b"{not json", timeout=30)
    assert bad.status_code == 400 and "error" in bad.json()  # the replica's codec answers, not a 499 or 500


def test_a_model_with_two_replicas_has_both_answer(ray_app: RayApp) -> None:
    body = {"inputs": [{"name": "x", "datatype": "FP32", "shape": [1, 4], "data": [1, 2, 3, 4]}]}

    def call(_: int) -> str:
        with httpx.Client() as client:
            r = client.post(f"{ray_app.url}/v2/models/mlp/infer", json=body, timeout=60)
            assert r.status_code == 200
            return r.headers["x-leanserve-replica"]

    with ThreadPoolExecutor(8) as pool:
        replicas = set(pool.map(call, range(64)))
    assert len(replicas) == 2, replicas


def test_a_split_across_replicas_keeps_each_unit_on_one_arm_and_counts_everything(ray_app: RayApp) -> None:
    body = {"inputs": [{"name": "x", "datatype": "FP32", "shape": [1, 4], "data": [1, 2, 3, 4]}]}
    seen: dict[str, set[str]] = {}
    total = 0
    for round_ in range(4):
        for unit in range(12):
            with httpx.Client() as client:  # a fresh connection: any ingress replica may take it
                r = client.post(
                    f"{ray_app.url}/v2/models/mlp-ab/infer",
                    json=body,
                    headers={"x-leanserve-unit": f"user-{unit}"},
                    timeout=60,
                )
            assert r.status_code == 200, (round_, r.text)
            seen.setdefault(f"user-{unit}", set()).add(r.headers["x-leanserve-arm"])
            total += 1
    assert all(len(arms) == 1 for arms in seen.values()), seen
    assert {a for arms in seen.values() for a in arms} == {"mlp:1", "mlp:2"}  # both arms serve someone
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:  # every ingress replica's counts reach the shared store
        status = httpx.get(f"{ray_app.url}/v2/experiments/mlp-ab", timeout=30).json()
        if sum(arm["requests"] for arm in status["arms"]) == total:
            break
        time.sleep(0.5)
    assert sum(arm["requests"] for arm in status["arms"]) == total, status["arms"]
