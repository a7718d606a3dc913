"""`serve` runs every engine a repository names: an OpenVINO version beside an ONNX Runtime one."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import onnxruntime as ort
import pytest

from tests.fixtures.onnx_models import write_mlp

from .conftest import RunningServer

pytest.importorskip("openvino")


@pytest.fixture(scope="module")
def two_engines(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    root = tmp_path_factory.mktemp("engines")
    write_mlp(root / "mlp" / "1" / "model.onnx", in_dim=4, out_dim=3, seed=5)
    write_mlp(root / "mlp" / "2" / "model.onnx", in_dim=4, out_dim=3, seed=5)
    (root / "mlp" / "model.toml").write_text(
        'version_policy = "all"\ndefault_version = 2\n'
        '[versions.2]\nplatform = "openvino"\nmodel_file = "model.onnx"\nlabel = "ov-fp32"\n'
        '[versions.2.runtime]\nproviders = ["openvino:CPU:f32"]\nintra_op_threads = 1\n'
    )
    server = RunningServer(root).start()
    yield server
    server.stop()


def test_openvino_version_answers_like_onnxruntime(two_engines: RunningServer) -> None:
    x = np.random.default_rng(2).normal(size=(5, 4)).astype(np.float32)
    body = {"inputs": [{"name": "x", "datatype": "FP32", "shape": [5, 4], "data": x.ravel().tolist()}]}
    reference = ort.InferenceSession(str(Path(two_engines.server.repository) / "mlp/1/model.onnx")).run(None, {"x": x})[
        0
    ]
    for path, version in (("/v2/models/mlp/versions/1/infer", "1"), ("/v2/models/mlp/infer", "2")):
        r = httpx.post(two_engines.url + path, json=body)
        assert r.status_code == 200, r.text
        assert r.json()["model_version"] == version  # default_version picks the OpenVINO one
        y = np.array(r.json()["outputs"][0]["data"], np.float32).reshape(5, 3)
        np.testing.assert_allclose(y, reference, rtol=1e-4, atol=1e-5)
    config = httpx.get(f"{two_engines.url}/v2/models/mlp/versions/2/config").json()
    assert config["backend"] == "openvino"
    assert config["label"] == "ov-fp32"
    assert any(p.startswith("openvino") for p in config["parameters"]["providers"])
