"""Write what ``leanserve deploy`` generates into a folder: the Dockerfile, its build context, the YAML."""

from __future__ import annotations

import shutil
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import yaml

from ..errors import UsageError
from .docker import dockerfile, requirements
from .k8s import Manifest, core_manifests, service_monitor
from .kserve import kserve_manifests
from .measure import measure_repository
from .options import DeployOptions
from .plan import Measured
from .rayservice import ray_service


@dataclass(frozen=True, slots=True)
class Written:
    files: tuple[Path, ...]
    measured: Measured


def dump(manifests: Sequence[Manifest]) -> str:
    return "---\n".join(yaml.safe_dump(m, sort_keys=False) for m in manifests)


def _context(repository: Path, out: Path, options: DeployOptions, extras: str = "") -> list[Path]:
    """The Docker build context: Dockerfiles, wheels/ and (baked) a copy of the repository."""
    out.mkdir(parents=True, exist_ok=True)
    written = []
    bake = options.models_claim is None
    for name, needs, cuda in (
        ("Dockerfile", "requirements.txt", False),
        ("Dockerfile.cuda", "requirements-cuda.txt", True),
    ):
        (out / name).write_text(dockerfile(cuda=cuda, bake=bake))
        (out / needs).write_text(requirements(cuda=cuda, extras=extras))
        written += [out / name, out / needs]
    wheels = out / "wheels"
    wheels.mkdir(exist_ok=True)
    (wheels / ".keep").write_text("")  # COPY needs the folder; put leanserve's wheel here to install it
    ignore = out / ".dockerignore"
    ignore.write_text("**/.leanserve\n**/__pycache__\n*.yaml\n")
    written.append(ignore)
    if bake:
        models = out / "models"
        if models.exists():
            shutil.rmtree(models)
        shutil.copytree(repository, models, ignore=shutil.ignore_patterns(".leanserve", "__pycache__"))
        written.append(models)
    return written


def _check(repository: Path, out: Path) -> None:
    if not repository.is_dir():
        raise UsageError(f"{repository} is not a directory", hint="pass a model repository folder")
    if out.resolve() == repository.resolve() or repository.resolve() in out.resolve().parents:
        raise UsageError(f"--out {out} is inside the repository", hint="write the deployment elsewhere")


def write_k8s(repository: Path, out: Path, options: DeployOptions, measured: Measured | None = None) -> Written:
    """Dockerfiles and build context, and ``leanserve.yaml`` (Deployment, Service, HPA, PDB) plus
    ``servicemonitor.yaml`` (the Prometheus operator's custom resource, apart: it needs its CRD)."""
    _check(repository, out)
    measured = measured or measure_repository(repository)
    files = _context(repository, out, options)
    (out / "leanserve.yaml").write_text(dump(core_manifests(options, measured)))
    (out / "servicemonitor.yaml").write_text(dump([service_monitor(options)]))
    return Written((*files, out / "leanserve.yaml", out / "servicemonitor.yaml"), measured)


def write_kserve(
    repository: Path,
    out: Path,
    options: DeployOptions,
    storage_uri: str,
    *,
    experiments: Path | None = None,
    state_dir: Path | None = None,
    canary: str | None = None,
    measured: Measured | None = None,
) -> Written:
    """Dockerfiles (the runtime's image) and ``kserve.yaml``: a ServingRuntime and an InferenceService."""
    _check(repository, out)
    measured = measured or measure_repository(repository)
    files = _context(repository, out, options)
    file = experiments or repository / "experiments.toml"
    manifests = kserve_manifests(options, measured, storage_uri, file, state_dir or repository / ".leanserve", canary)
    (out / "kserve.yaml").write_text(dump(manifests))
    return Written((*files, out / "kserve.yaml"), measured)


def write_ray(repository: Path, out: Path, options: DeployOptions, measured: Measured | None = None) -> Written:
    """Dockerfiles with leanserve[ray] and ``rayservice.yaml``: a KubeRay RayService."""
    _check(repository, out)
    measured = measured or measure_repository(repository)
    files = _context(repository, out, options, extras="ray")
    (out / "rayservice.yaml").write_text(dump([ray_service(options, measured)]))
    return Written((*files, out / "rayservice.yaml"), measured)
