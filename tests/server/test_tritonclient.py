"""tritonclient, a client nobody here wrote, against a real leanserve server: JSON and binary tensors."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest
import tritonclient.http as httpclient
from tritonclient.utils import InferenceServerException

from .conftest import RunningServer


@pytest.fixture
def client(server: RunningServer) -> httpclient.InferenceServerClient:
    return httpclient.InferenceServerClient(url=f"127.0.0.1:{server.port}")


def reference(repository: Path, version: int, x: np.ndarray) -> np.ndarray:
    session = ort.InferenceSession(str(repository / "mlp" / str(version) / "model.onnx"))
    out: np.ndarray = session.run(None, {"x": x})[0]
    return out


def test_health_and_metadata(client: httpclient.InferenceServerClient) -> None:
    assert client.is_server_live()
    assert client.is_server_ready()
    assert client.is_model_ready("mlp")
    assert not client.is_model_ready("broken")
    meta = client.get_model_metadata("mlp")
    assert meta["inputs"][0]["name"] == "x"
    config = client.get_model_config("mlp")
    assert config["max_batch_size"] == 8
    stats = client.get_inference_statistics("mlp")
    assert stats["model_stats"]


@pytest.mark.parametrize("binary_in", [True, False])
@pytest.mark.parametrize("binary_out", [True, False])
def test_infer_json_and_binary(
    client: httpclient.InferenceServerClient, repository: Path, binary_in: bool, binary_out: bool
) -> None:
    x = np.random.default_rng(3).normal(size=(5, 4)).astype(np.float32)
    inp = httpclient.InferInput("x", list(x.shape), "FP32")
    inp.set_data_from_numpy(x, binary_data=binary_in)
    out = httpclient.InferRequestedOutput("y", binary_data=binary_out)
    result = client.infer("mlp", [inp], model_version="1", outputs=[out], request_id="t-1")
    np.testing.assert_allclose(result.as_numpy("y"), reference(repository, 1, x), rtol=1e-5)
    response = result.get_response()
    assert response["id"] == "t-1"
    assert response["model_version"] == "1"


def test_binary_by_default_without_outputs(client: httpclient.InferenceServerClient, repository: Path) -> None:
    x = np.ones((2, 4), np.float32)
    inp = httpclient.InferInput("x", [2, 4], "FP32")
    inp.set_data_from_numpy(x)  # tritonclient's default: binary
    result = client.infer("mlp", [inp])
    np.testing.assert_allclose(result.as_numpy("y"), reference(repository, 2, x), rtol=1e-5)


def test_errors_reach_the_client_as_messages(client: httpclient.InferenceServerClient) -> None:
    inp = httpclient.InferInput("x", [1, 5], "FP32")
    inp.set_data_from_numpy(np.ones((1, 5), np.float32))
    with pytest.raises(InferenceServerException, match="input 'x'"):
        client.infer("mlp", [inp])
    with pytest.raises(InferenceServerException, match="unknown model"):
        client.get_model_metadata("nope")


def test_gzip_compressed_request(client: httpclient.InferenceServerClient, repository: Path) -> None:
    x = np.ones((1, 4), np.float32)
    inp = httpclient.InferInput("x", [1, 4], "FP32")
    inp.set_data_from_numpy(x)
    result = client.infer("mlp", [inp], model_version="1", request_compression_algorithm="gzip")
    np.testing.assert_allclose(result.as_numpy("y"), reference(repository, 1, x), rtol=1e-5)
