"""The public surface: a sorted __all__ whose names all exist; one name for each thing."""

import importlib
import types
from pathlib import Path

import pytest
from starlette.testclient import TestClient

import leanserve
from tests.fixtures.onnx_models import write_marked_model


def test_all_is_sorted_and_importable() -> None:
    assert leanserve.__all__ == sorted(leanserve.__all__)
    for name in leanserve.__all__:
        assert hasattr(leanserve, name), name


def test_optimize_is_the_function_and_optimization_the_package() -> None:
    package = importlib.import_module("leanserve.optimization")
    assert isinstance(package, types.ModuleType)
    assert callable(leanserve.optimize) and leanserve.optimize is package.optimize
    assert leanserve.optimization is package  # the attribute and the import agree
    with pytest.raises(ModuleNotFoundError):
        importlib.import_module("leanserve.optimize")  # a name that means two things is not kept


def test_the_asgi_app_serves_a_repository_under_a_plain_asgi_server(tmp_path: Path) -> None:
    write_marked_model(tmp_path / "m" / "1" / "model.onnx", 4.0, weight_mib=0.05)
    app = leanserve.asgi_app(tmp_path, options=leanserve.RegistryOptions(default_load="on_demand"))
    body = {"inputs": [{"name": "x", "shape": [1, 4], "datatype": "FP32", "data": [1, 2, 3, 4]}]}
    with TestClient(app) as client:  # runs the lifespan: the repository is read
        assert client.get("/v2/models/m").json()["parameters"]["state"] == "UNAVAILABLE"
        assert client.post("/v2/models/m/infer", json=body).json()["outputs"][0]["data"] == [4.0]
