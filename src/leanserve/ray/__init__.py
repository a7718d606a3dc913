"""leanserve on Ray Serve (``pip install 'leanserve[ray]'``): the repository as a Ray Serve application.

``leanserve serve ./models --ray``, or ``serve run leanserve.ray:app_builder repository=./models``.
One deployment per model (leanserve's runtime and batcher in each replica, ``[scale]`` in
model.toml for replicas and autoscaling) behind an ingress speaking the Open Inference Protocol.
"""

from __future__ import annotations

from .app import RayOptions, app_builder, build_application
from .run import serve_on_ray

__all__ = ["RayOptions", "app_builder", "build_application", "serve_on_ray"]
