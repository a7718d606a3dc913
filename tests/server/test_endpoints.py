"""The protocol's endpoints over plain HTTP against a real server: results equal a direct ONNX Runtime run."""

from __future__ import annotations

from pathlib import Path

import httpx
import numpy as np
import onnxruntime as ort
import pytest

from .conftest import RunningServer


def reference(repository: Path, version: int, x: np.ndarray) -> np.ndarray:
    session = ort.InferenceSession(str(repository / "mlp" / str(version) / "model.onnx"))
    out: np.ndarray = session.run(None, {session.get_inputs()[0].name: x})[0]
    return out


def infer_body(x: np.ndarray, **extra: object) -> dict[str, object]:
    return {"inputs": [{"name": "x", "datatype": "FP32", "shape": list(x.shape), "data": x.tolist()}], **extra}


def test_health_answers_by_status_code(server: RunningServer) -> None:
    assert httpx.get(f"{server.url}/v2/health/live").status_code == 200
    assert httpx.get(f"{server.url}/v2/health/ready").status_code == 200


def test_server_metadata_lists_extensions(server: RunningServer) -> None:
    meta = httpx.get(f"{server.url}/v2").json()
    assert meta["name"] == "leanserve"
    assert {"binary_tensor_data", "statistics", "model_configuration"} <= set(meta["extensions"])


def test_model_metadata_has_batch_dimension_and_versions(server: RunningServer) -> None:
    meta = httpx.get(f"{server.url}/v2/models/mlp").json()
    assert meta["name"] == "mlp"
    assert meta["versions"] == ["1", "2"]
    assert meta["inputs"] == [{"name": "x", "datatype": "FP32", "shape": [-1, 4]}]
    assert meta["outputs"][0]["shape"] == [-1, 3]
    assert httpx.get(f"{server.url}/v2/models/mlp/versions/1").json()["parameters"]["version"] == "1"


def test_model_readiness(server: RunningServer) -> None:
    assert httpx.get(f"{server.url}/v2/models/mlp/ready").status_code == 200
    assert httpx.get(f"{server.url}/v2/models/mlp/versions/1/ready").status_code == 200
    broken = httpx.get(f"{server.url}/v2/models/broken/ready")
    assert broken.status_code == 503
    assert "broken" in broken.json()["error"]


@pytest.mark.parametrize("version", [None, 1, 2])
def test_infer_matches_onnxruntime(server: RunningServer, repository: Path, version: int | None) -> None:
    x = np.random.default_rng(0).normal(size=(3, 4)).astype(np.float32)
    path = f"/v2/models/mlp{'' if version is None else f'/versions/{version}'}/infer"
    r = httpx.post(server.url + path, json=infer_body(x, id="req-7", parameters={"trace": "abc"}))
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["model_name"] == "mlp"
    assert body["model_version"] == str(version or 2)  # the highest version answers by default
    assert body["id"] == "req-7"
    assert body["parameters"] == {"trace": "abc"}
    (out,) = body["outputs"]
    assert out["shape"] == [3, 3]
    np.testing.assert_allclose(
        np.array(out["data"], np.float32).reshape(3, 3), reference(repository, version or 2, x), rtol=1e-5
    )


def test_nested_data_and_output_selection(server: RunningServer, repository: Path) -> None:
    x = np.arange(8, dtype=np.float32).reshape(2, 4) / 10
    r = httpx.post(f"{server.url}/v2/models/mlp/versions/1/infer", json=infer_body(x, outputs=[{"name": "y"}]))
    assert r.status_code == 200, r.text
    (out,) = r.json()["outputs"]
    assert out["name"] == "y"
    np.testing.assert_allclose(np.array(out["data"], np.float32).reshape(2, 3), reference(repository, 1, x), rtol=1e-5)


def test_config_in_triton_form(server: RunningServer) -> None:
    config = httpx.get(f"{server.url}/v2/models/mlp/config").json()
    assert config["name"] == "mlp"
    assert config["max_batch_size"] == 8
    assert config["input"] == [{"name": "x", "data_type": "TYPE_FP32", "dims": [4]}]
    assert config["version_policy"] == {"all": {}}


def test_stats_count_requests_and_batches(server: RunningServer) -> None:
    x = np.ones((2, 4), np.float32)
    before = httpx.get(f"{server.url}/v2/models/mlp/versions/1/stats").json()["model_stats"][0]
    for _ in range(3):
        assert httpx.post(f"{server.url}/v2/models/mlp/versions/1/infer", json=infer_body(x)).status_code == 200
    after = httpx.get(f"{server.url}/v2/models/mlp/versions/1/stats").json()["model_stats"][0]
    assert after["inference_count"] - before["inference_count"] == 6
    assert after["inference_stats"]["success"]["count"] - before["inference_stats"]["success"]["count"] == 3
    assert after["inference_stats"]["compute_infer"]["ns"] > before["inference_stats"]["compute_infer"]["ns"]
    assert after["memory_usage"][0]["byte_size"] >= 0
    assert any(b["batch_size"] == 2 for b in after["batch_stats"])
    every = httpx.get(f"{server.url}/v2/models/stats").json()["model_stats"]
    assert {(s["name"], s["version"]) for s in every} >= {("mlp", "1"), ("mlp", "2")}


def test_repository_index_shows_state_and_reason(server: RunningServer) -> None:
    index = httpx.post(f"{server.url}/v2/repository/index").json()
    states = {(e["name"], e["version"]): e for e in index}
    assert states[("mlp", "1")]["state"] == "READY"
    broken = states[("broken", "1")]
    assert broken["state"] == "UNAVAILABLE"
    assert broken["reason"]


def test_keep_alive_and_pipelined_requests_are_answered_in_order(server: RunningServer) -> None:
    import socket

    requests = []
    for i in range(5):
        payload = httpx.Request("POST", "http://x/", json=infer_body(np.full((1, 4), i, np.float32), id=f"r{i}")).read()
        requests.append(
            b"POST /v2/models/mlp/versions/1/infer HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            b"Content-Length: %d\r\n\r\n%s" % (len(payload), payload)
        )
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as s:
        s.sendall(b"".join(requests) + b"GET /v2 HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        data = b""
        while chunk := s.recv(65536):
            data += chunk
    assert data.count(b"HTTP/1.1 200 OK") == 6
    positions = [data.index(b'"id":"r%d"' % i) for i in range(5)]
    assert positions == sorted(positions)
    assert data.index(b'"name":"leanserve"') > positions[-1]


def test_metrics_exposition(server: RunningServer) -> None:
    httpx.post(f"{server.url}/v2/models/mlp/versions/1/infer", json=infer_body(np.ones((1, 4), np.float32)))
    text = httpx.get(f"{server.url}/metrics").text
    from prometheus_client.parser import text_string_to_metric_families

    families = {f.name: f for f in text_string_to_metric_families(text)}
    for name in (
        "leanserve_requests",
        "leanserve_request_duration_seconds",
        "leanserve_queue_duration_seconds",
        "leanserve_compute_duration_seconds",
        "leanserve_batch_size",
        "leanserve_in_flight_requests",
        "leanserve_model_ready",
        "leanserve_model_memory_bytes",
    ):
        assert name in families, name
    success = [
        s.value
        for s in families["leanserve_requests"].samples
        if s.labels == {"model": "mlp", "version": "1", "outcome": "success", "protocol": "http"}
    ]
    assert success and success[0] >= 1
