"""KServe: leanserve as a custom ServingRuntime (Open Inference Protocol v2), and an InferenceService.

KServe's storage initializer puts the repository at /mnt/models; the runtime serves it with
``leanserve serve``. The InferenceService's ``canaryTrafficPercent`` is the current step of a
canary experiment of experiments.toml (its step as the experiment's records have it, when the
server already ran it here, else its first): KServe then splits traffic between the last ready
revision and the new one as the experiment would between its arms.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ..errors import UsageError
from ..experiments.config import ExperimentConfig, load_experiments
from .k8s import Manifest, _metadata, _probe, server_env
from .options import DeployOptions
from .plan import PROBE_PERIOD_S, Measured, resources_for, startup_failure_threshold

KSERVE_MODELS = "/mnt/models"
KSERVE_PORT = 8080


def serving_runtime(options: DeployOptions, measured: Measured) -> Manifest:
    res = resources_for(measured, options.memory_budget, options.cpus, options.workers)
    limits: dict[str, str] = {"memory": res.memory_limit}
    if options.cuda:
        limits["nvidia.com/gpu"] = "1"
    return {
        "apiVersion": "serving.kserve.io/v1alpha1",
        "kind": "ServingRuntime",
        "metadata": _metadata(options),
        "spec": {
            "supportedModelFormats": [
                {"name": "onnx", "version": "1", "autoSelect": True, "priority": 1},
                {"name": "openvino", "autoSelect": True, "priority": 1},
            ],
            "protocolVersions": ["v2"],
            "multiModel": False,
            "containers": [
                {
                    "name": "kserve-container",
                    "image": options.image,
                    "args": ["serve", KSERVE_MODELS, "--host", "0.0.0.0", "--port", str(KSERVE_PORT)],
                    "command": ["leanserve"],
                    "ports": [{"containerPort": KSERVE_PORT, "protocol": "TCP"}],
                    "env": server_env(options),
                    "resources": {
                        "requests": {"cpu": res.cpu_request, "memory": res.memory_request},
                        "limits": limits,
                    },
                    "startupProbe": _probe(
                        "/v2/health/ready", PROBE_PERIOD_S, startup_failure_threshold(measured.slowest_load_seconds)
                    )
                    | {"httpGet": {"path": "/v2/health/ready", "port": KSERVE_PORT}},
                    "readinessProbe": _probe("/v2/health/ready", 5, 2)
                    | {"httpGet": {"path": "/v2/health/ready", "port": KSERVE_PORT}},
                    "livenessProbe": _probe("/v2/health/live", 10, 3)
                    | {"httpGet": {"path": "/v2/health/live", "port": KSERVE_PORT}},
                }
            ],
        },
    }


def canary_percent(experiments: dict[str, ExperimentConfig], state_dir: Path | None, name: str | None) -> int | None:
    """The canary's share of traffic, in percent, or None when the repository has no canary."""
    canaries = {n: c for n, c in experiments.items() if c.mode == "canary"}
    if name is not None:
        if name not in canaries:
            raise UsageError(
                f"no canary experiment {name!r}", hint=f"canaries: {', '.join(sorted(canaries)) or 'none'}"
            )
        chosen = canaries[name]
    elif len(canaries) > 1:
        raise UsageError("several canary experiments", hint=f"choose one with --canary ({', '.join(sorted(canaries))})")
    elif canaries:
        chosen = next(iter(canaries.values()))
    else:
        return None
    step = _current_step(chosen, state_dir)
    return round(chosen.steps[step])


def _current_step(config: ExperimentConfig, state_dir: Path | None) -> int:
    from ..server.experiments import STORE_NAME

    store_path = state_dir / STORE_NAME if state_dir is not None else None
    if store_path is None or not store_path.is_file():
        return 0
    from ..experiments.store import SqliteStore

    with SqliteStore(store_path, config.name) as store:
        step = store.state().step
    return min(step, len(config.steps) - 1)


def inference_service(options: DeployOptions, storage_uri: str, canary: int | None) -> Manifest:
    predictor: dict[str, Any] = {
        "minReplicas": options.min_replicas,
        "maxReplicas": options.max_replicas,
        "model": {
            "modelFormat": {"name": "onnx"},
            "runtime": options.name,
            "protocolVersion": "v2",
            "storageUri": storage_uri,
        },
    }
    if canary is not None:
        predictor["canaryTrafficPercent"] = canary
    return {
        "apiVersion": "serving.kserve.io/v1beta1",
        "kind": "InferenceService",
        "metadata": _metadata(options),
        "spec": {"predictor": predictor},
    }


def kserve_manifests(
    options: DeployOptions,
    measured: Measured,
    storage_uri: str,
    experiments_file: Path | None,
    state_dir: Path | None,
    canary: str | None = None,
) -> list[Manifest]:
    configs = load_experiments(experiments_file) if experiments_file is not None and experiments_file.is_file() else {}
    percent = canary_percent(configs, state_dir, canary)
    return [serving_runtime(options, measured), inference_service(options, storage_uri, percent)]
