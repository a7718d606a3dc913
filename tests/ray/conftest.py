"""One local Ray instance and one leanserve application on it, shared by the Ray tests (they start slowly)."""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.fixtures.onnx_models import write_mlp
from tests.support import free_port, wait_until_ready

ray = pytest.importorskip("ray")
serve = pytest.importorskip("ray.serve")

EXPERIMENTS = """
[experiments.mlp-ab]
mode = "split"
arms = [{model = "mlp", version = 1, weight = 50}, {model = "mlp", version = 2, weight = 50}]
"""


@dataclass(frozen=True)
class RayApp:
    url: str
    repository: Path


@pytest.fixture(scope="module")
def ray_app(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RayApp]:
    from leanserve.ray import RayOptions, build_application

    repo = tmp_path_factory.mktemp("ray") / "models"
    write_mlp(repo / "mlp" / "1" / "model.onnx", seed=1)
    write_mlp(repo / "mlp" / "2" / "model.onnx", seed=2)
    (repo / "mlp" / "model.toml").write_text('version_policy = "all"\n\n[scale]\nnum_replicas = 2\nnum_cpus = 0.25\n')
    write_mlp(repo / "solo" / "1" / "model.onnx", seed=3)
    (repo / "solo" / "model.toml").write_text("[scale]\nnum_cpus = 0.25\n")
    (repo / "experiments.toml").write_text(EXPERIMENTS)
    os.environ["RAY_USAGE_STATS_ENABLED"] = "0"
    for attempt in range(2):  # a loaded machine can time Ray's node start-up out once
        try:
            ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
            break
        except Exception:
            ray.shutdown()
            if attempt:
                raise
    port = free_port()
    try:
        serve.start(http_options={"host": "127.0.0.1", "port": port})
        serve.run(build_application(repo, RayOptions(ingress_replicas=2)), name="leanserve", route_prefix="/")
        url = f"http://127.0.0.1:{port}"
        wait_until_ready(url, timeout=120)
        yield RayApp(url, repo)
    finally:
        serve.shutdown()
        ray.shutdown()
