"""``leanserve deploy k8s``: manifests Kubernetes accepts (kubernetes-validate --strict), Dockerfiles
hadolint passes, requests sized from what the repository measured."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from leanserve.deploy import DeployOptions, Measured, resources_for, startup_failure_threshold, write_k8s

VALIDATE = Path(sys.executable).with_name("kubernetes-validate")
HADOLINT = shutil.which("hadolint") or str(Path(sys.executable).with_name("hadolint"))
MIB = 1 << 20


def test_requests_come_from_the_measured_memory_or_the_budget() -> None:
    m = Measured(baseline_bytes=100 * MIB, model_bytes={"a": 50 * MIB, "b": 30 * MIB}, slowest_load_seconds=2.0)
    no_budget = resources_for(m, None, cpus=2)
    assert (no_budget.memory_request, no_budget.memory_limit, no_budget.cpu_request) == ("180Mi", "225Mi", "2000m")
    budget = resources_for(m, 1024 * MIB, cpus=1, workers=2)  # each worker has its own baseline
    assert budget.memory_request == "1224Mi"
    assert startup_failure_threshold(2.0) == 12  # at least a minute, at 5 s a probe
    assert startup_failure_threshold(100.0) == 60  # three times the slowest load


def test_measuring_loads_every_version(measured: Measured) -> None:
    assert set(measured.model_bytes) == {"mlp"} and measured.model_bytes["mlp"] > 0
    assert measured.baseline_bytes > 0


def test_core_manifests_validate_strictly_and_dockerfiles_pass_hadolint(
    repository: Path, measured: Measured, tmp_path: Path
) -> None:
    options = DeployOptions(image="registry.example/leanserve:0.1.0", memory_budget=512 * MIB, workers=2, cpus=2)
    written = write_k8s(repository, tmp_path / "out", options, measured)
    out = tmp_path / "out"
    assert (out / "models" / "mlp" / "1" / "model.onnx").is_file()  # baked: the build context holds it
    result = subprocess.run([str(VALIDATE), "--strict", str(out / "leanserve.yaml")], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.count("passed") == 4  # Deployment, Service, HorizontalPodAutoscaler, PodDisruptionBudget
    for dockerfile in ("Dockerfile", "Dockerfile.cuda"):
        lint = subprocess.run([HADOLINT, str(out / dockerfile)], capture_output=True, text=True)
        assert lint.returncode == 0, lint.stdout + lint.stderr
    docs = list(yaml.safe_load_all((out / "leanserve.yaml").read_text()))
    assert [d["kind"] for d in docs] == ["Deployment", "Service", "HorizontalPodAutoscaler", "PodDisruptionBudget"]
    pod = docs[0]["spec"]["template"]["spec"]
    c = pod["containers"][0]
    assert c["readinessProbe"]["httpGet"]["path"] == "/v2/health/ready"
    assert c["livenessProbe"]["httpGet"]["path"] == "/v2/health/live"
    assert c["startupProbe"]["httpGet"]["path"] == "/v2/health/ready"
    assert c["securityContext"]["runAsNonRoot"] is True
    env = {e["name"]: e for e in c["env"]}
    assert env["LEANSERVE_ADMIN_TOKEN"]["valueFrom"]["secretKeyRef"]["name"] == "leanserve-admin"
    assert env["LEANSERVE_MEMORY_BUDGET"]["value"] == f"{512 * MIB}B" and env["LEANSERVE_WORKERS"]["value"] == "2"
    assert c["resources"]["requests"]["memory"] == resources_for(measured, 512 * MIB, 2, 2).memory_request
    # The Prometheus operator's ServiceMonitor is a custom resource: no schema package, so only its shape.
    monitor = yaml.safe_load((out / "servicemonitor.yaml").read_text())
    assert monitor["apiVersion"] == "monitoring.coreos.com/v1"
    assert monitor["spec"]["endpoints"] == [{"port": "http", "path": "/metrics", "interval": "15s"}]
    assert all(p.exists() for p in written.files)


def test_a_claim_mounts_the_repository_instead_of_baking_it(
    repository: Path, measured: Measured, tmp_path: Path
) -> None:
    options = DeployOptions(image="registry.example/leanserve:0.1.0", models_claim="models")
    write_k8s(repository, tmp_path / "out", options, measured)
    assert not (tmp_path / "out" / "models").exists()
    assert "COPY --chown" not in (tmp_path / "out" / "Dockerfile").read_text()
    result = subprocess.run([str(VALIDATE), "--strict", str(tmp_path / "out" / "leanserve.yaml")], capture_output=True)
    assert result.returncode == 0


def test_the_output_folder_may_not_be_inside_the_repository(repository: Path, measured: Measured) -> None:
    from leanserve.errors import UsageError

    with pytest.raises(UsageError):
        write_k8s(repository, repository / "deploy", DeployOptions(image="x"), measured)
