"""Kubernetes manifests for ``leanserve serve`` in a pod: Deployment, Service, autoscaler, disruption
budget and the Prometheus operator's ServiceMonitor (plain dicts, written as YAML by :mod:`.writer`).

Probes: a startup probe on readiness gives a slow load time (as measured here) before the
kubelet judges liveness; readiness (``/v2/health/ready``) is true only once every ``always``
model has loaded and answered its warm-up, so a pod the autoscaler adds joins the Service only
when it can answer (kserve#2882); liveness (``/v2/health/live``) answers from the moment the
server listens, so a long load is never taken for a hung server.
"""

from __future__ import annotations

from typing import Any

from .options import ADMIN_TOKEN_KEY, MODELS_PATH, PORT, STATE_PATH, DeployOptions
from .plan import PROBE_PERIOD_S, Measured, resources_for, startup_failure_threshold

Manifest = dict[str, Any]


def _metadata(options: DeployOptions, name: str | None = None) -> dict[str, Any]:
    meta: dict[str, Any] = {"name": name or options.name, "labels": labels(options)}
    if options.namespace:
        meta["namespace"] = options.namespace
    return meta


def labels(options: DeployOptions) -> dict[str, str]:
    return {"app.kubernetes.io/name": "leanserve", "app.kubernetes.io/instance": options.name}


def _probe(path: str, period: int, failures: int) -> dict[str, Any]:
    return {
        "httpGet": {"path": path, "port": "http"},
        "periodSeconds": period,
        "timeoutSeconds": 2,
        "failureThreshold": failures,
    }


def server_env(options: DeployOptions) -> list[dict[str, Any]]:
    """The server's environment in the pod: budget, workers, admin token (from its Secret), threads."""
    env: list[dict[str, Any]] = [{"name": "LEANSERVE_WORKERS", "value": str(options.workers)}]
    if options.memory_budget is not None:
        env.append({"name": "LEANSERVE_MEMORY_BUDGET", "value": f"{options.memory_budget}B"})
    env.append(
        {
            "name": "LEANSERVE_ADMIN_TOKEN",
            # Optional: without the Secret the pod serves with model control off, as without a token.
            "valueFrom": {"secretKeyRef": {"name": options.admin_secret, "key": ADMIN_TOKEN_KEY, "optional": True}},
        }
    )
    # The engines take the pod's CPU share, not every core of the node (intra_op_threads = 0).
    threads = max(1, int(options.cpus) // max(1, options.workers))
    env.append({"name": "LEANSERVE_ENGINE_THREADS", "value": str(threads)})
    return env


def container(options: DeployOptions, measured: Measured) -> dict[str, Any]:
    res = resources_for(measured, options.memory_budget, options.cpus, options.workers)
    limits: dict[str, str] = {"memory": res.memory_limit}
    if options.cuda:
        limits["nvidia.com/gpu"] = "1"
    mounts: list[dict[str, Any]] = [{"name": "state", "mountPath": STATE_PATH}, {"name": "tmp", "mountPath": "/tmp"}]
    if options.models_claim:
        mounts.append({"name": "models", "mountPath": MODELS_PATH, "readOnly": True})
    return {
        "name": "leanserve",
        "image": options.image,
        "ports": [{"name": "http", "containerPort": PORT, "protocol": "TCP"}],
        "env": server_env(options),
        "resources": {"requests": {"cpu": res.cpu_request, "memory": res.memory_request}, "limits": limits},
        "startupProbe": _probe(
            "/v2/health/ready", PROBE_PERIOD_S, startup_failure_threshold(measured.slowest_load_seconds)
        ),
        "readinessProbe": _probe("/v2/health/ready", 5, 2),
        "livenessProbe": _probe("/v2/health/live", 10, 3),
        "securityContext": {
            "runAsNonRoot": True,
            "runAsUser": 10001,
            "allowPrivilegeEscalation": False,
            "readOnlyRootFilesystem": True,
            "capabilities": {"drop": ["ALL"]},
        },
        "volumeMounts": mounts,
    }


def deployment(options: DeployOptions, measured: Measured) -> Manifest:
    c = container(options, measured)
    # The root file system is read-only: the state and temporary files (the workers' sockets) go here.
    volumes: list[dict[str, Any]] = [{"name": "state", "emptyDir": {}}, {"name": "tmp", "emptyDir": {}}]
    if options.models_claim:
        volumes.append(
            {"name": "models", "persistentVolumeClaim": {"claimName": options.models_claim, "readOnly": True}}
        )
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": _metadata(options),
        "spec": {
            "replicas": options.min_replicas,
            "selector": {"matchLabels": labels(options)},
            "template": {
                "metadata": {"labels": labels(options)},
                "spec": {
                    # SIGTERM drains in-flight requests (up to 30 s in the server); a little more here.
                    "terminationGracePeriodSeconds": 45,
                    "containers": [c],
                    "volumes": volumes,
                },
            },
        },
    }


def service(options: DeployOptions) -> Manifest:
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": _metadata(options),
        "spec": {
            "selector": labels(options),
            "ports": [{"name": "http", "port": PORT, "targetPort": "http", "protocol": "TCP"}],
        },
    }


def autoscaler(options: DeployOptions) -> Manifest:
    return {
        "apiVersion": "autoscaling/v2",
        "kind": "HorizontalPodAutoscaler",
        "metadata": _metadata(options),
        "spec": {
            "scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": options.name},
            "minReplicas": options.min_replicas,
            "maxReplicas": options.max_replicas,
            "metrics": [
                {
                    "type": "Resource",
                    "resource": {
                        "name": "cpu",
                        "target": {"type": "Utilization", "averageUtilization": options.target_cpu_percent},
                    },
                }
            ],
        },
    }


def disruption_budget(options: DeployOptions) -> Manifest:
    return {
        "apiVersion": "policy/v1",
        "kind": "PodDisruptionBudget",
        "metadata": _metadata(options),
        "spec": {"maxUnavailable": 1, "selector": {"matchLabels": labels(options)}},
    }


def service_monitor(options: DeployOptions) -> Manifest:
    return {
        "apiVersion": "monitoring.coreos.com/v1",
        "kind": "ServiceMonitor",
        "metadata": _metadata(options),
        "spec": {
            "selector": {"matchLabels": labels(options)},
            "endpoints": [{"port": "http", "path": "/metrics", "interval": "15s"}],
        },
    }


def core_manifests(options: DeployOptions, measured: Measured) -> list[Manifest]:
    """The manifests of Kubernetes itself (validated against its schemas in the tests)."""
    return [deployment(options, measured), service(options), autoscaler(options), disruption_budget(options)]
