"""KubeRay: a RayService running ``leanserve.ray:app_builder`` on a Ray cluster in Kubernetes."""

from __future__ import annotations

from typing import Any

import yaml

from .k8s import Manifest, _metadata
from .options import MODELS_PATH, STATE_PATH, DeployOptions
from .plan import Measured, resources_for

RAY_VERSION = "2.40.0"  # the lowest ray[serve] leanserve[ray] accepts; set it to the image's


def ray_service(options: DeployOptions, measured: Measured, ray_version: str = RAY_VERSION) -> Manifest:
    res = resources_for(measured, options.memory_budget, options.cpus, options.workers)
    args: dict[str, str] = {"repository": MODELS_PATH, "state_dir": STATE_PATH}
    if options.memory_budget is not None:
        args["memory_budget"] = f"{options.memory_budget}B"  # per replica
    serve_config = {
        "applications": [
            {"name": "leanserve", "import_path": "leanserve.ray:app_builder", "route_prefix": "/", "args": args}
        ]
    }

    def pod(name: str, head: bool) -> dict[str, Any]:
        ports = [{"containerPort": 8000, "name": "serve"}]
        if head:
            ports += [{"containerPort": 6379, "name": "gcs"}, {"containerPort": 8265, "name": "dashboard"}]
        resources = {
            "requests": {"cpu": res.cpu_request, "memory": res.memory_request},
            "limits": {"memory": res.memory_limit},
        }
        return {
            "spec": {
                "containers": [{"name": name, "image": options.image, "ports": ports, "resources": resources}],
            }
        }

    return {
        "apiVersion": "ray.io/v1",
        "kind": "RayService",
        "metadata": _metadata(options),
        "spec": {
            "serveConfigV2": yaml.safe_dump(serve_config, sort_keys=False),
            "rayClusterConfig": {
                "rayVersion": ray_version,
                "enableInTreeAutoscaling": True,
                "headGroupSpec": {"rayStartParams": {"num-cpus": "0"}, "template": pod("ray-head", True)},
                "workerGroupSpecs": [
                    {
                        "groupName": "models",
                        "replicas": options.min_replicas,
                        "minReplicas": options.min_replicas,
                        "maxReplicas": options.max_replicas,
                        "rayStartParams": {},
                        "template": pod("ray-worker", False),
                    }
                ],
            },
        },
    }
