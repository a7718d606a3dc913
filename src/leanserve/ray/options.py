"""What model.toml's ``[scale]`` becomes on Ray Serve: one deployment's options (pure, no Ray import)."""

from __future__ import annotations

import math
import re
from typing import Any, Final

from ..config import Scale
from ..runtimes import ENGINE_THREADS_ENV

DEPLOYMENT_PREFIX: Final = "leanserve-model-"
INGRESS_NAME: Final = "leanserve-ingress"


def deployment_name(model: str) -> str:
    """The Ray Serve deployment of one model (Ray refuses some characters model names may hold)."""
    return DEPLOYMENT_PREFIX + re.sub(r"[^A-Za-z0-9_.-]", "_", model)


def engine_threads(num_cpus: float) -> int:
    """Engine threads for a replica that Ray gives ``num_cpus`` CPUs: its share, at least one."""
    return max(1, math.floor(num_cpus))


def deployment_options(scale: Scale) -> dict[str, Any]:
    """Keyword arguments for ``Deployment.options``: replicas or autoscaling, CPUs, engine threads.

    The replica's engine threads travel as an environment variable of its runtime environment,
    read where the engine is created (:func:`leanserve.runtimes.default_engine_threads`), so a
    model that leaves its threads to the engine (``intra_op_threads = 0``) takes the replica's
    CPUs, not every core of the node.
    """
    options: dict[str, Any] = {
        "max_ongoing_requests": scale.max_ongoing_requests,
        "ray_actor_options": {
            "num_cpus": scale.num_cpus,
            "runtime_env": {"env_vars": {ENGINE_THREADS_ENV: str(engine_threads(scale.num_cpus))}},
        },
    }
    if scale.autoscaling:
        low = scale.min_replicas if scale.min_replicas is not None else 1
        high = scale.max_replicas if scale.max_replicas is not None else max(low, 1)
        options["autoscaling_config"] = {
            "min_replicas": low,
            "max_replicas": max(high, low),
            "target_ongoing_requests": scale.target_ongoing_requests,
        }
    else:
        options["num_replicas"] = scale.num_replicas or 1
    return options
