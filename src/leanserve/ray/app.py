"""The repository as a Ray Serve application: one deployment per model behind one ingress.

``serve run leanserve.ray:app_builder repository=./models`` (Ray's CLI), ``leanserve serve
./models --ray`` (ours), or :func:`build_application` from Python. Each model's ``[scale]`` table
in model.toml gives its replicas (or autoscaling) and CPUs; each replica runs leanserve's own
runtime and dynamic batcher within the memory budget.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ray import serve
from ray.serve import Application

from ..config import Scale, load_model_config
from ..errors import ConfigError, UsageError
from ..memory import parse_size
from ..registry import RegistryOptions
from ..repository import scan_repository
from ..server.auth import ADMIN_TOKEN_ENV, Tokens
from ..server.experiments import FILE_NAME
from ..server.observability import STATE_DIR
from .ingress import Ingress
from .options import INGRESS_NAME, deployment_name, deployment_options
from .replica import ModelReplica


@dataclass(frozen=True, slots=True)
class RayOptions:
    """What the application takes beyond the repository (and what ``app_builder`` reads from args)."""

    options: RegistryOptions = field(default_factory=RegistryOptions)  # the memory budget applies per replica
    tokens: Tokens | None = None
    experiments: Path | None = None  # None: <repository>/experiments.toml when it exists
    state_dir: Path | None = None  # None: <repository>/.leanserve (shared by every replica: one file system)
    ingress_replicas: int = 1
    ingress_cpus: float = 0.0  # the ingress only forwards: the engines' CPUs go to the models


def build_application(repository: Path, options: RayOptions | None = None) -> Application:
    opts = options or RayOptions()
    repository = Path(repository).resolve()
    scan = scan_repository(repository, names_only=True)
    if not scan.models:
        raise UsageError(f"{repository} holds no models", hint="a model is <repo>/<model>/<version>/model.onnx")
    handles: dict[str, Any] = {}
    for entry in scan.models:
        try:
            scale = load_model_config(repository / entry.name).scale
        except ConfigError:
            scale = Scale()  # the replica reports the error as its model's state, as one server does
        deployment: Any = serve.deployment(ModelReplica)
        deployment = deployment.options(name=deployment_name(entry.name), **deployment_options(scale))
        handles[entry.name] = deployment.bind(str(repository), entry.name, opts.options, opts.tokens)
    experiments = opts.experiments or repository / FILE_NAME
    state_dir = opts.state_dir or repository / STATE_DIR
    ingress: Any = serve.deployment(Ingress)
    ingress = ingress.options(
        name=INGRESS_NAME,
        num_replicas=opts.ingress_replicas,
        max_ongoing_requests=1024,
        ray_actor_options={"num_cpus": opts.ingress_cpus},
    )
    file = str(experiments) if experiments.is_file() else None
    application: Application = ingress.bind(handles, file, str(state_dir), opts.tokens)
    return application


def app_builder(args: dict[str, str]) -> Application:
    """Ray Serve's application builder: ``serve run leanserve.ray:app_builder repository=./models
    [memory_budget=6GiB] [load=on_demand] [experiments=FILE] [state_dir=DIR] [ingress_replicas=2]``;
    the admin token comes from ``$LEANSERVE_ADMIN_TOKEN``."""
    import os

    known = {"repository", "memory_budget", "load", "experiments", "state_dir", "ingress_replicas", "token"}
    unknown = sorted(set(args) - known)
    if unknown:
        raise UsageError(f"unknown argument {unknown[0]!r}", hint=f"known: {', '.join(sorted(known))}")
    if "repository" not in args:
        raise UsageError("repository=DIR is required")
    budget = args.get("memory_budget")
    load = args.get("load", "always")
    if load not in ("always", "on_demand"):
        raise UsageError(f"load must be always or on_demand, not {load!r}")
    registry = RegistryOptions(memory_budget=parse_size(budget) if budget else None, default_load=load)  # type: ignore[arg-type]
    tokens = Tokens(admin=os.environ.get(ADMIN_TOKEN_ENV) or None, inference=args.get("token"))
    return build_application(
        Path(args["repository"]),
        RayOptions(
            registry,
            tokens,
            Path(args["experiments"]) if "experiments" in args else None,
            Path(args["state_dir"]) if "state_dir" in args else None,
            int(args.get("ingress_replicas", "1")),
        ),
    )
