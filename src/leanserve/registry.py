"""The models the server holds: which versions are loaded, their state, engine and batcher.

This is the seam where a later memory budget with on-demand loading and eviction plugs in:
everything that wants a model asks :meth:`ModelRegistry.get`, and only the registry creates or
drops engines.
"""

from __future__ import annotations

import asyncio
import enum
import logging
import os
import time
from dataclasses import dataclass, field
from pathlib import Path

from .batching import Batcher
from .check import check_version
from .errors import ModelNotFound, ModelNotReady
from .repository import ModelEntry, ModelVersionSpec, resolve_version, safe_model_name, scan_repository
from .runtimes import Runtime
from .stats import ModelStats

log = logging.getLogger("leanserve.registry")


class State(enum.Enum):
    LOADING = "LOADING"
    READY = "READY"
    UNAVAILABLE = "UNAVAILABLE"
    UNLOADING = "UNLOADING"


@dataclass(slots=True)
class ModelVersion:
    """One version of a model, loaded or not; ``reason`` says why it is not READY."""

    name: str
    version: int
    state: State
    stats: ModelStats
    spec: ModelVersionSpec | None = None
    runtime: Runtime | None = None
    batcher: Batcher | None = None
    reason: str = ""

    @property
    def ready(self) -> bool:
        return self.state is State.READY


@dataclass(slots=True)
class Model:
    name: str
    versions: dict[int, ModelVersion] = field(default_factory=dict)
    default_version: int | None = None
    error: str = ""  # a model-level problem (its model.toml), when no version could be read

    @property
    def ready(self) -> bool:
        return any(v.ready for v in self.versions.values())


def _resident_bytes() -> int:
    """This process's resident memory, from /proc (0 where there is none)."""
    try:
        with open("/proc/self/statm", "rb") as f:
            pages = int(f.read().split()[1])
    except (OSError, ValueError, IndexError):
        return 0
    return pages * os.sysconf("SC_PAGE_SIZE")


class ModelRegistry:
    def __init__(self, repository: Path) -> None:
        self.repository = repository
        self._models: dict[str, Model] = {}
        self.loaded = False  # True once the start-up load has finished (ready or not)

    @property
    def models(self) -> dict[str, Model]:
        return self._models

    def get_model(self, name: str) -> Model:
        model = self._models.get(name)
        if model is None:
            safe_model_name(name)  # a hostile name gets its own message
            raise ModelNotFound(
                f"unknown model {name!r}",
                hint=f"models in this repository: {', '.join(sorted(self._models)) or 'none'}",
            )
        return model

    def get(self, name: str, version: str | None = None) -> ModelVersion:
        """The version to answer with; 404 for an unknown model or version, 503 when not ready."""
        model = self.get_model(name)
        if version:
            if not version.isdigit():
                raise ModelNotFound(f"model {name!r} has no version {version!r}", hint="versions are integers")
            mv = model.versions.get(int(version))
            if mv is None:
                raise ModelNotFound(
                    f"model {name!r} has no version {version}",
                    hint=f"versions: {', '.join(str(v) for v in sorted(model.versions)) or 'none'}",
                )
        else:
            mv = self._default(model)
        if not mv.ready:
            raise ModelNotReady(
                f"model {name!r} version {mv.version} is {mv.state.value}" + (f": {mv.reason}" if mv.reason else "")
            )
        return mv

    def _default(self, model: Model) -> ModelVersion:
        if model.default_version is not None and model.default_version in model.versions:
            chosen = model.versions[model.default_version]
            if chosen.ready:
                return chosen
        ready = [v for v in model.versions.values() if v.ready]
        if ready:
            return max(ready, key=lambda v: v.version)
        if model.versions:
            return model.versions[max(model.versions)]
        raise ModelNotReady(f"model {model.name!r} is not available: {model.error or 'no version loaded'}")

    async def load_all(self) -> None:
        """Scan the repository and load every selected version; one failure never stops the others."""
        loop = asyncio.get_running_loop()
        scan = await loop.run_in_executor(None, scan_repository, self.repository)
        to_load: list[tuple[ModelVersion, ModelEntry]] = []
        for entry in scan.models:
            model = Model(name=entry.name)
            self._models[entry.name] = model
            if entry.error is not None or entry.config is None:
                model.error = str(entry.error)
                log.error("model %s: %s", entry.name, model.error)
                continue
            model.default_version = entry.config.default_version
            for version in entry.versions:
                mv = ModelVersion(entry.name, version, State.LOADING, ModelStats(entry.name, str(version)))
                model.versions[version] = mv
                to_load.append((mv, entry))
        for mv, entry in to_load:
            # One at a time, so that the resident-memory delta is attributable to one version.
            await loop.run_in_executor(None, self._load_version, mv, entry)
            if mv.runtime is not None and mv.spec is not None:
                config = mv.spec.config
                mv.batcher = Batcher(mv.runtime, config.max_batch_size or 0, config.dynamic_batching, mv.stats)
                mv.state = State.READY
        self.loaded = True

    def _load_version(self, mv: ModelVersion, entry: ModelEntry) -> None:
        before = _resident_bytes()
        start = time.perf_counter()
        try:
            assert entry.config is not None
            spec = resolve_version(entry.directory, entry.config, mv.version)
            check, runtime = check_version(spec)
        except Exception as e:
            mv.state, mv.reason = State.UNAVAILABLE, str(e)
            log.error("model %s version %d: %s", mv.name, mv.version, e)
            return
        if runtime is None or not check.ok:
            mv.state, mv.reason = State.UNAVAILABLE, check.error or "failed its start-up check"
            log.error("model %s version %d: %s", mv.name, mv.version, mv.reason)
            return
        mv.spec, mv.runtime = spec, runtime
        mv.stats.load_seconds = time.perf_counter() - start
        mv.stats.memory_bytes = max(0, _resident_bytes() - before)
        log.info("model %s version %d ready (%.2fs)", mv.name, mv.version, mv.stats.load_seconds)

    async def close(self) -> None:
        """Let queued work finish, then release every engine."""
        for model in self._models.values():
            for mv in model.versions.values():
                if mv.batcher is not None:
                    mv.state = State.UNLOADING
                    await mv.batcher.close()
                if mv.runtime is not None:
                    mv.runtime.close()
                    mv.runtime = None
