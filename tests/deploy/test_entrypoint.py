"""The image's entrypoint, run outside a container (no Docker daemon here) with the pod's environment,
answers the pod's probes; the admin token from the Secret reaches it; SIGTERM ends it with 0.

What stays untested without a daemon and a cluster: building the image (pip inside it, the CUDA
base), the non-root user's file permissions, and the kubelet acting on the probes."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families

from leanserve.deploy import DeployOptions, Measured, write_k8s
from tests.support import free_port

TOKEN = "secret-from-the-cluster"
BUDGET = "leanserve_memory_budget_bytes"


def _entrypoint(dockerfile: str) -> list[str]:
    match = re.search(r"^ENTRYPOINT (\[.*\])$", dockerfile, re.MULTILINE)
    assert match, dockerfile
    command: list[str] = json.loads(match.group(1))
    return command


@pytest.mark.slow
def test_the_images_command_answers_the_pods_probes(repository: Path, measured: Measured, tmp_path: Path) -> None:
    options = DeployOptions(image="registry.example/leanserve:0.1.0", memory_budget=256 << 20, workers=1)
    out = tmp_path / "out"
    write_k8s(repository, out, options, measured)
    deployment = next(yaml.safe_load_all((out / "leanserve.yaml").read_text()))
    container = deployment["spec"]["template"]["spec"]["containers"][0]
    port = free_port()
    # The container's paths, here: the baked repository is out/models, the state volume a folder.
    paths = {"/models": str(out / "models"), "/var/lib/leanserve": str(tmp_path / "state"), "8000": str(port)}
    command = [paths.get(arg, arg) for arg in _entrypoint((out / "Dockerfile").read_text())]
    assert command[:2] == ["leanserve", "serve"]
    env = dict(os.environ)
    for var in container["env"]:
        env[var["name"]] = var.get("value", TOKEN)  # a Secret's key, as the kubelet sets it
    proc = subprocess.Popen(
        [sys.executable, "-m", "leanserve", *command[1:]], env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT
    )
    try:
        base = f"http://127.0.0.1:{port}"
        startup = container["startupProbe"]
        deadline = time.monotonic() + startup["periodSeconds"] * startup["failureThreshold"]
        while time.monotonic() < deadline:  # the startup probe, as the kubelet runs it
            try:
                if httpx.get(base + startup["httpGet"]["path"], timeout=startup["timeoutSeconds"]).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            time.sleep(0.2)
        else:
            raise AssertionError("the startup probe never passed")
        for probe in ("readinessProbe", "livenessProbe"):
            assert httpx.get(base + container[probe]["httpGet"]["path"], timeout=2).status_code == 200
        index = httpx.post(f"{base}/v2/repository/index", json={}, timeout=10).json()
        assert {(e["name"], e["state"]) for e in index} == {("mlp", "READY")}
        admin = {"authorization": f"Bearer {TOKEN}"}
        assert httpx.post(f"{base}/v2/repository/models/mlp/load", headers=admin, timeout=30).status_code == 200
        metrics = httpx.get(f"{base}/metrics", timeout=10).text
        budget = [s.value for f in text_string_to_metric_families(metrics) for s in f.samples if s.name == BUDGET]
        assert budget == [256 << 20]  # the budget from the pod's environment
        proc.send_signal(signal.SIGTERM)  # what the kubelet sends when the pod goes
        assert proc.wait(60) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
