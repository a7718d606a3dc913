"""``leanserve deploy k8s|kserve|ray ./models --image IMAGE --out deploy/``: manifests and a Dockerfile."""

from __future__ import annotations

import argparse
from pathlib import Path

from ..errors import UsageError


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("deploy", help="write a Dockerfile and manifests for Kubernetes, KServe or KubeRay")
    targets = p.add_subparsers(dest="target", required=True, metavar="TARGET")
    for target, about in (
        ("k8s", "Deployment, Service, HorizontalPodAutoscaler, PodDisruptionBudget, ServiceMonitor"),
        ("kserve", "a KServe ServingRuntime (protocol v2) and an InferenceService"),
        ("ray", "a KubeRay RayService running leanserve.ray:app_builder"),
    ):
        t = targets.add_parser(target, help=about)
        t.add_argument("repository", type=Path, help="the model repository (loaded here once, to measure it)")
        t.add_argument("--image", required=True, help="the image the manifests run (build it from --out)")
        t.add_argument("--out", type=Path, required=True, help="the folder to write (the Docker build context)")
        t.add_argument("--name", default="leanserve", help="name of the resources (default: %(default)s)")
        t.add_argument("--namespace", default=None, help="namespace of the resources (default: none given)")
        t.add_argument("--memory-budget", default=None, help="memory budget per pod (per replica on Ray)")
        t.add_argument("--workers", type=int, default=1, help="worker processes per pod (default: %(default)s)")
        t.add_argument("--cpus", type=float, default=1.0, help="CPU request per pod (default: %(default)s)")
        t.add_argument("--min-replicas", type=int, default=1)
        t.add_argument("--max-replicas", type=int, default=4)
        t.add_argument(
            "--models-claim", default=None, help="mount the repository from this PersistentVolumeClaim (default: bake)"
        )
        t.add_argument("--admin-secret", default="leanserve-admin", help="Secret with the admin token under 'token'")
        t.add_argument("--cuda", action="store_true", help="one GPU per pod (and build Dockerfile.cuda)")
        if target == "kserve":
            t.add_argument(
                "--storage-uri", required=True, help="where KServe fetches the repository (s3://, gs://, pvc://)"
            )
            t.add_argument("--canary", default=None, help="the canary experiment whose step sets canaryTrafficPercent")
        t.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ..deploy import DeployOptions, write_k8s, write_kserve, write_ray
    from ..memory import format_size, parse_size

    if args.min_replicas < 1 or args.max_replicas < args.min_replicas:
        raise UsageError("replicas: need 1 <= --min-replicas <= --max-replicas")
    if args.workers < 1 or args.cpus <= 0:
        raise UsageError("--workers must be 1 or more and --cpus positive")
    options = DeployOptions(
        image=args.image,
        name=args.name,
        namespace=args.namespace,
        memory_budget=parse_size(args.memory_budget) if args.memory_budget else None,
        workers=args.workers,
        cpus=args.cpus,
        min_replicas=args.min_replicas,
        max_replicas=args.max_replicas,
        admin_secret=args.admin_secret,
        models_claim=args.models_claim,
        cuda=args.cuda,
    )
    if args.target == "k8s":
        written = write_k8s(args.repository, args.out, options)
    elif args.target == "kserve":
        written = write_kserve(args.repository, args.out, options, args.storage_uri, canary=args.canary)
    else:
        written = write_ray(args.repository, args.out, options)
    m = written.measured
    sizes = ", ".join(f"{name} {format_size(n)}" for name, n in sorted(m.model_bytes.items()))
    server, slowest = format_size(m.baseline_bytes), m.slowest_load_seconds
    print(f"measured: server {server}; models: {sizes}; slowest load {slowest:.1f} s")
    for path in written.files:
        print(f"wrote {path}")
    return 0
