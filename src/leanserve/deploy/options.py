"""What ``leanserve deploy`` is told: the image, the names, the sizes."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

MODELS_PATH: Final = "/models"  # where the image holds (or the pod mounts) the repository
STATE_PATH: Final = "/var/lib/leanserve"  # the failure log and experiment records (an emptyDir)
PORT: Final = 8000
ADMIN_TOKEN_KEY: Final = "token"  # the key of the admin token in its Secret


@dataclass(frozen=True, slots=True)
class DeployOptions:
    image: str
    name: str = "leanserve"
    namespace: str | None = None
    memory_budget: int | None = None  # bytes, per pod (divided between its workers)
    workers: int = 1  # processes per pod (serve --workers)
    cpus: float = 1.0  # CPU request per pod
    min_replicas: int = 1
    max_replicas: int = 4
    target_cpu_percent: int = 70  # the HorizontalPodAutoscaler's target utilization
    admin_secret: str = "leanserve-admin"  # a Secret holding the admin token under ADMIN_TOKEN_KEY
    models_claim: str | None = None  # a PersistentVolumeClaim holding the repository; None: baked into the image
    cuda: bool = False  # the CUDA base image and one nvidia.com/gpu per pod
