"""``leanserve deploy kserve`` and ``deploy ray``: the custom resources.

No package provides the schemas of KServe's ServingRuntime and InferenceService or of KubeRay's
RayService (kubernetes-validate knows Kubernetes' own kinds only), so these are checked for the
fields their controllers read; the RayService's serve config is built into a Ray Serve application.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import yaml

from leanserve.deploy import DeployOptions, Measured, write_kserve, write_ray
from leanserve.experiments.records import ExperimentState
from leanserve.experiments.store import SqliteStore

HADOLINT = shutil.which("hadolint") or str(Path(sys.executable).with_name("hadolint"))


def test_a_serving_runtime_for_protocol_v2_onnx_and_openvino(
    repository: Path, measured: Measured, tmp_path: Path
) -> None:
    options = DeployOptions(image="registry.example/leanserve:0.1.0")
    write_kserve(
        repository, tmp_path / "out", options, "s3://bucket/models", state_dir=tmp_path / "none", measured=measured
    )
    runtime, service = yaml.safe_load_all((tmp_path / "out" / "kserve.yaml").read_text())
    assert (runtime["apiVersion"], runtime["kind"]) == ("serving.kserve.io/v1alpha1", "ServingRuntime")
    assert runtime["spec"]["protocolVersions"] == ["v2"]
    assert {f["name"] for f in runtime["spec"]["supportedModelFormats"]} == {"onnx", "openvino"}
    container = runtime["spec"]["containers"][0]
    assert container["command"] == ["leanserve"] and container["args"][:2] == ["serve", "/mnt/models"]
    assert container["readinessProbe"]["httpGet"] == {"path": "/v2/health/ready", "port": 8080}
    assert (service["apiVersion"], service["kind"]) == ("serving.kserve.io/v1beta1", "InferenceService")
    model = service["spec"]["predictor"]["model"]
    assert model["runtime"] == "leanserve" and model["protocolVersion"] == "v2"
    assert model["storageUri"] == "s3://bucket/models"
    assert service["spec"]["predictor"]["canaryTrafficPercent"] == 5  # the canary's first step


def test_the_canary_percent_follows_the_experiments_current_step(
    repository: Path, measured: Measured, tmp_path: Path
) -> None:
    state = tmp_path / "state"
    state.mkdir()
    with SqliteStore(state / "experiments.sqlite3", "mlp-canary") as store:
        store.set_state(ExperimentState(step=1, arms=("mlp:1", "mlp:2")))
    options = DeployOptions(image="registry.example/leanserve:0.1.0")
    write_kserve(repository, tmp_path / "out", options, "pvc://models", state_dir=state, measured=measured)
    _, service = yaml.safe_load_all((tmp_path / "out" / "kserve.yaml").read_text())
    assert service["spec"]["predictor"]["canaryTrafficPercent"] == 25


def test_a_ray_service_whose_serve_config_builds_the_application(
    repository: Path, measured: Measured, tmp_path: Path
) -> None:
    from leanserve.ray import app_builder

    options = DeployOptions(image="registry.example/leanserve-ray:0.1.0", memory_budget=1 << 30)
    write_ray(repository, tmp_path / "out", options, measured)
    service = yaml.safe_load((tmp_path / "out" / "rayservice.yaml").read_text())
    assert (service["apiVersion"], service["kind"]) == ("ray.io/v1", "RayService")
    app = yaml.safe_load(service["spec"]["serveConfigV2"])["applications"][0]
    assert app["import_path"] == "leanserve.ray:app_builder"
    assert "leanserve[ray]==" in (tmp_path / "out" / "requirements.txt").read_text()
    args = {**app["args"], "repository": str(repository), "state_dir": str(tmp_path / "state")}
    built = app_builder(args)  # what Ray Serve does with the config, without starting Ray
    assert type(built).__name__ == "Application"
    for dockerfile in ("Dockerfile", "Dockerfile.cuda"):
        lint = subprocess.run([HADOLINT, str(tmp_path / "out" / dockerfile)], capture_output=True, text=True)
        assert lint.returncode == 0, lint.stdout
