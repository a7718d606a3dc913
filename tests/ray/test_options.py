"""The pure parts of the Ray path: [scale] to deployment options, the ingress's URL routing, and an
ASGI call inside a replica (no Ray needed, but they live with the Ray tests)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from leanserve.config import Scale, load_model_config
from leanserve.errors import ConfigError
from leanserve.protocol import Limits
from leanserve.ray.forward import Call, call_asgi
from leanserve.ray.ingress import Target, parse_path
from leanserve.ray.options import deployment_name, deployment_options, engine_threads
from leanserve.registry import ModelRegistry
from leanserve.router import Router
from leanserve.runtimes import ENGINE_THREADS_ENV
from leanserve.server.asgi import build_app
from leanserve.server.handlers import Handlers
from tests.fixtures.onnx_models import write_mlp


def test_fixed_replicas_and_cpus_become_deployment_options() -> None:
    options = deployment_options(Scale(num_replicas=3, num_cpus=2.0))
    assert options["num_replicas"] == 3 and "autoscaling_config" not in options
    assert options["ray_actor_options"]["num_cpus"] == 2.0
    assert options["ray_actor_options"]["runtime_env"]["env_vars"] == {ENGINE_THREADS_ENV: "2"}
    assert options["max_ongoing_requests"] == 64  # room for batches, not Ray's 5
    assert deployment_options(Scale())["num_replicas"] == 1


def test_min_and_max_replicas_become_autoscaling() -> None:
    options = deployment_options(Scale(min_replicas=0, max_replicas=4, target_ongoing_requests=8))
    assert options["autoscaling_config"] == {"min_replicas": 0, "max_replicas": 4, "target_ongoing_requests": 8}
    assert "num_replicas" not in options
    assert engine_threads(0.25) == 1 and engine_threads(3.9) == 3
    assert deployment_name("digits/../x y") == "leanserve-model-digits_.._x_y"


def test_scale_is_part_of_the_one_model_toml_schema(tmp_path: Path) -> None:
    (tmp_path / "m").mkdir()
    (tmp_path / "m" / "model.toml").write_text("[scale]\nmin_replicas = 1\nmax_replicas = 3\n")
    assert load_model_config(tmp_path / "m").scale == Scale(min_replicas=1, max_replicas=3)
    for bad, field in (
        ("num_replicas = 2\nmax_replicas = 3", "scale.num_replicas"),
        ("min_replicas = 4\nmax_replicas = 3", "scale.min_replicas"),
        ("num_replica = 2", "scale.num_replica"),
        ("target_ongoing_requests = 0", "scale.target_ongoing_requests"),
    ):
        (tmp_path / "m" / "model.toml").write_text(f"[scale]\n{bad}\n")
        with pytest.raises(ConfigError) as e:
            load_model_config(tmp_path / "m")
        assert field in str(e.value), (bad, str(e.value))


def test_the_ingress_reads_the_model_and_operation_from_the_url() -> None:
    assert parse_path("/v2/models/mlp/infer") == Target("model", "mlp", None, "infer")
    assert parse_path("/v2/models/mlp/versions/2/ready") == Target("model", "mlp", "2", "ready")
    assert parse_path("/v2/models/mlp") == Target("model", "mlp", None, "")
    assert parse_path("/v2/models/stats") == Target("stats")
    assert parse_path("/v2/repository/models/mlp/unload") == Target("model", "mlp", None, "unload")
    assert parse_path("/v2/experiments/ab/feedback") == Target("experiments", "ab", None, "feedback")
    assert parse_path("/v2/health/ready") == Target("ready")
    assert parse_path("/v2/models/mlp/infer/extra").kind == "unknown"


async def test_an_asgi_call_inside_a_replica_is_answered_not_taken_for_a_client_that_left(tmp_path: Path) -> None:
    # The caller of a replica's method is waiting for the answer: the app must not see a disconnect
    # (that merge bug answered every request on Ray with 499).
    write_mlp(tmp_path / "mlp" / "1" / "model.onnx")
    registry = ModelRegistry(tmp_path)
    handlers = Handlers(registry, Router(registry, Limits()))
    await registry.load_all()
    try:
        app = build_app(handlers)
        x = np.ones((2, 4), np.float32)
        body = (
            b'{"inputs":[{"name":"x","datatype":"FP32","shape":[2,4],"data":'
            + str(x.ravel().tolist()).encode()
            + b"}]}"
        )
        answer = await call_asgi(app, Call("POST", "/v2/models/mlp/infer", body=body))
        assert answer.status == 200, answer.body
        assert ("content-type", "application/json") in answer.headers
        assert (await call_asgi(app, Call("GET", "/v2/models/mlp/ready"))).status == 200
        assert (await call_asgi(app, Call("GET", "/v2/models/nope"))).status == 404
    finally:
        await registry.close()
