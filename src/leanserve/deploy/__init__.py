"""``leanserve deploy``: the same repository on Kubernetes, KServe or KubeRay.

Writes a Docker build context (CPU and CUDA Dockerfiles, the repository baked in or mounted from a
claim) and manifests sized by what the repository measured when loaded here.
"""

from __future__ import annotations

from .docker import dockerfile, entrypoint, requirements
from .k8s import core_manifests, service_monitor
from .kserve import canary_percent, kserve_manifests
from .measure import measure_repository
from .options import DeployOptions
from .plan import Measured, Resources, resources_for, startup_failure_threshold
from .rayservice import ray_service
from .writer import Written, dump, write_k8s, write_kserve, write_ray

__all__ = [
    "DeployOptions",
    "Measured",
    "Resources",
    "Written",
    "canary_percent",
    "core_manifests",
    "dockerfile",
    "dump",
    "entrypoint",
    "kserve_manifests",
    "measure_repository",
    "ray_service",
    "requirements",
    "resources_for",
    "service_monitor",
    "startup_failure_threshold",
    "write_k8s",
    "write_kserve",
    "write_ray",
]
