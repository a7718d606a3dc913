"""Catch mistakes before serving: every configuration parses, matches its model file, loads, and answers.

``serve`` runs :func:`check_version` on each version at start-up and keeps the loaded engine,
so a version that fails here is never reported ready while the others serve.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .errors import LeanserveError
from .protocol.datatypes import numpy_dtype
from .repository import ModelVersionSpec, resolve_version, scan_repository
from .runtimes import Runtime, load_runtime


@dataclass(frozen=True, slots=True)
class VersionCheck:
    model: str
    version: int | None  # None: the model's configuration failed before any version was read
    inputs: str
    outputs: str
    load_seconds: float
    smoke_latency_ms: float
    error: str | None = None

    @property
    def ok(self) -> bool:
        return self.error is None


@dataclass(frozen=True, slots=True)
class CheckReport:
    results: tuple[VersionCheck, ...]

    @property
    def ok(self) -> bool:
        return all(r.ok for r in self.results)


def _describe(specs: object) -> str:
    return ", ".join(f"{t.name}:{t.datatype}{list(t.shape)}" for t in specs)  # type: ignore[attr-defined]


def smoke_inputs(spec: ModelVersionSpec) -> dict[str, np.ndarray]:
    """Inputs of one row that any model should accept: zeros (valid token ids, valid pixels), b"a" for BYTES."""
    batch = (1,) if spec.config.batching else ()
    feed: dict[str, np.ndarray] = {}
    for t in spec.config.inputs:
        shape = batch + tuple(1 if d == -1 else d for d in t.shape)
        if t.datatype == "BYTES":
            feed[t.name] = np.full(shape, b"a", dtype=object)
        else:
            feed[t.name] = np.zeros(shape, dtype=numpy_dtype(t.datatype))
    return feed


def check_version(spec: ModelVersionSpec) -> tuple[VersionCheck, Runtime | None]:
    """Load ``spec`` and run a smoke inference; on success the loaded engine comes back for reuse."""
    config = spec.config
    start = time.perf_counter()
    runtime: Runtime | None = None
    try:
        runtime = load_runtime(spec.path, config.platform, config.runtime)
        load_seconds = time.perf_counter() - start
        feed = smoke_inputs(spec)
        t = time.perf_counter()
        outputs = runtime.run(feed)
        latency = (time.perf_counter() - t) * 1000
        for o in config.outputs:
            got = outputs.get(o.name)
            if got is None:
                raise LeanserveError(f"smoke inference returned no output {o.name!r}")
            if o.datatype != "BYTES" and got.dtype != numpy_dtype(o.datatype):
                raise LeanserveError(f"output {o.name!r} came back as {got.dtype}, declared {o.datatype}")
            if config.batching and (got.ndim == 0 or got.shape[0] != 1):
                raise LeanserveError(
                    f"output {o.name!r} has shape {list(got.shape)} for a batch of 1",
                    hint="set max_batch_size = 0 if the model does not batch along dimension 0",
                )
    except Exception as e:
        if runtime is not None:
            runtime.close()
        message = str(e) if isinstance(e, LeanserveError) else f"{type(e).__name__}: {e}"
        return VersionCheck(
            spec.name,
            spec.version,
            _describe(config.inputs),
            _describe(config.outputs),
            time.perf_counter() - start,
            0.0,
            message,
        ), None
    return VersionCheck(
        spec.name, spec.version, _describe(config.inputs), _describe(config.outputs), load_seconds, latency
    ), runtime


def check_repository(root: Path) -> CheckReport:
    """Check every model and version of a repository; nothing is served."""
    results: list[VersionCheck] = []
    for entry in scan_repository(root).models:
        if entry.config is None:
            results.append(VersionCheck(entry.name, None, "", "", 0.0, 0.0, str(entry.error)))
            continue
        for version in entry.versions:
            try:
                spec = resolve_version(entry.directory, entry.config, version)
            except LeanserveError as e:
                results.append(VersionCheck(entry.name, version, "", "", 0.0, 0.0, str(e)))
                continue
            check, runtime = check_version(spec)
            if runtime is not None:
                runtime.close()
            results.append(check)
    return CheckReport(tuple(results))
