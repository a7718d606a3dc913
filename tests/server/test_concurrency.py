"""Many concurrent requests with distinct inputs: no request may ever receive another's rows."""

from __future__ import annotations

import asyncio
from pathlib import Path

import httpx
import numpy as np
import onnxruntime as ort

from .conftest import RunningServer


async def test_concurrent_distinct_requests_each_get_their_own_rows(server: RunningServer, repository: Path) -> None:
    session = ort.InferenceSession(str(repository / "mlp" / "1" / "model.onnx"))
    rng = np.random.default_rng(11)
    xs = [rng.normal(size=(int(rng.integers(1, 4)), 4)).astype(np.float32) for _ in range(300)]
    before = httpx.get(f"{server.url}/v2/models/mlp/versions/1/stats").json()["model_stats"][0]

    limits = httpx.Limits(max_connections=64)
    async with httpx.AsyncClient(base_url=server.url, limits=limits, timeout=30) as client:

        async def one(i: int, x: np.ndarray) -> tuple[int, dict[str, object]]:
            body = {
                "id": str(i),
                "inputs": [{"name": "x", "datatype": "FP32", "shape": list(x.shape), "data": x.ravel().tolist()}],
            }
            r = await client.post("/v2/models/mlp/versions/1/infer", json=body)
            assert r.status_code == 200, r.text
            return i, r.json()

        results = await asyncio.gather(*(one(i, x) for i, x in enumerate(xs)))

    for i, body in results:
        assert body["id"] == str(i)
        out = body["outputs"][0]  # type: ignore[index]
        expected = session.run(None, {"x": xs[i]})[0]
        assert out["shape"] == list(expected.shape)
        np.testing.assert_allclose(
            np.array(out["data"], np.float32).reshape(expected.shape), expected, rtol=1e-5, atol=1e-6
        )

    after = httpx.get(f"{server.url}/v2/models/mlp/versions/1/stats").json()["model_stats"][0]
    executions = after["execution_count"] - before["execution_count"]
    rows = after["inference_count"] - before["inference_count"]
    assert rows == sum(x.shape[0] for x in xs)
    assert executions < len(xs), "requests that arrived together were batched"
