"""Catch mistakes before serving: every configuration parses, matches its model file, loads, and answers.

``serve`` runs :func:`check_version` on each version at start-up and keeps the loaded engine,
so a version that fails here is never reported ready while the others serve.

What the model answers is a warm-up, as Triton's ``model_warmup``: the samples in
``<repo>/<model>/warmup.npz`` when the user gives them (one array per input; rows along the
first dimension when the model batches), else synthetic ones (zeros, variable dimensions 1).
A model may rightly refuse a synthetic input (audio shorter than one frame, a sample rate that
must be 8000 or 16000): that is a warning, never a failure. A user's sample that fails is an
error. A batching model then runs once more at its largest batch, so that the engine allocates
its memory arenas here, where the registry measures what a version costs, and not under the
first heavy load.
"""

from __future__ import annotations

import logging
import time
import zipfile
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from .config import RuntimeOptions, TensorSpec
from .errors import ConfigError, InvalidInput, LeanserveError
from .optimization.sweep import tile
from .protocol.datatypes import datatype_of, numpy_dtype
from .repository import ModelVersionSpec, resolve_version, scan_repository
from .runtimes import Runtime, load_runtime
from .runtimes.threads import available_cores, plan_threads

WARMUP_FILE = "warmup.npz"
log = logging.getLogger("leanserve.check")


@dataclass(frozen=True, slots=True)
class VersionCheck:
    model: str
    version: int | None  # None: the model's configuration failed before any version was read
    inputs: str
    outputs: str
    load_seconds: float
    smoke_latency_ms: float  # of the first warm-up run; 0.0 when it failed
    error: str | None = None
    warnings: tuple[str, ...] = ()  # the version serves; these say what to look at

    @property
    def ok(self) -> bool:
        return self.error is None


@dataclass(frozen=True, slots=True)
class CheckReport:
    results: tuple[VersionCheck, ...]

    @property
    def ok(self) -> bool:
        return all(r.ok for r in self.results)


def _describe(specs: tuple[TensorSpec, ...]) -> str:
    return ", ".join(f"{t.name}:{t.datatype}{list(t.shape)}" for t in specs)


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


def warmup_path(spec: ModelVersionSpec) -> Path:
    # The model file is a plain name inside <repo>/<model>/<version>/ (config refuses paths).
    return spec.path.parent.parent / WARMUP_FILE


def warmup_samples(spec: ModelVersionSpec) -> dict[str, np.ndarray] | None:
    """The user's warm-up samples for ``spec``, checked against its inputs; None when there are none."""
    path = warmup_path(spec)
    if not path.is_file():
        return None
    try:
        # allow_pickle=False: an object array in an .npz is a pickle, and leanserve never unpickles.
        with np.load(path, allow_pickle=False) as npz:
            arrays = {name: npz[name] for name in npz.files}
    except (OSError, ValueError, zipfile.BadZipFile) as e:
        raise ConfigError(
            str(path), None, f"is not a readable .npz of plain arrays: {e}", hint="write it with numpy.savez"
        ) from None
    config = spec.config
    known = {t.name for t in config.inputs}
    unknown = sorted(arrays.keys() - known)
    if unknown:
        raise ConfigError(str(path), unknown[0], "is no input of the model", hint=f"its inputs: {', '.join(known)}")
    rows: dict[str, int] = {}
    for t in config.inputs:
        if t.name not in arrays:
            raise ConfigError(str(path), t.name, "is missing: give one array per model input")
        array = arrays[t.name]
        try:
            datatype = datatype_of(array)
        except InvalidInput as e:
            raise ConfigError(str(path), t.name, e.message) from None
        if datatype != t.datatype:
            raise ConfigError(str(path), t.name, f"holds {array.dtype}, but the input is {t.datatype}")
        shape = array.shape[1:] if config.batching else array.shape
        if len(shape) != len(t.shape) or any(want not in (-1, got) for got, want in zip(shape, t.shape, strict=True)):
            expected = ("[rows, " + ", ".join(map(str, t.shape)) + "]") if config.batching else str(list(t.shape))
            raise ConfigError(str(path), t.name, f"has shape {list(array.shape)}, expected {expected}")
        if config.batching:
            rows[t.name] = array.shape[0]
    if config.batching:
        counts = set(rows.values())
        limit = config.max_batch_size or 0
        if len(counts) != 1 or not 1 <= min(counts) <= limit:
            listed = ", ".join(f"{name} {n}" for name, n in rows.items())
            raise ConfigError(str(path), None, f"rows per input ({listed}) must be one count in 1..{limit}")
    return arrays


def check_version(spec: ModelVersionSpec) -> tuple[VersionCheck, Runtime | None]:
    """Load ``spec`` and warm it up; on success the loaded engine comes back for reuse."""
    config = spec.config
    start = time.perf_counter()
    runtime: Runtime | None = None
    warnings: list[str] = []
    latency = 0.0
    try:
        runtime = load_runtime(spec.path, config.platform, config.runtime)
        load_seconds = time.perf_counter() - start
        samples = warmup_samples(spec)
        feed = samples if samples is not None else smoke_inputs(spec)
        t = time.perf_counter()
        try:
            outputs = runtime.run(feed)
        except Exception as e:
            if samples is not None:
                raise ConfigError(
                    str(warmup_path(spec)),
                    None,
                    f"the model fails on these warm-up samples: {_reason(e)}",
                    hint="give samples the model accepts, or remove the file to warm up on synthetic inputs",
                ) from e
            warnings.append(
                f"the model rejects the synthetic smoke input ({_shapes(feed)}): {_reason(e)}; "
                f"it serves, but give real samples in {warmup_path(spec)} to warm it up and check it"
            )
        else:
            latency = (time.perf_counter() - t) * 1000
            _check_outputs(spec, outputs, _rows(feed) if config.batching else None)
            runtime = _choose_threads(spec, runtime, feed)
            if config.batching:
                warnings.extend(_largest_batch(runtime, spec, feed))
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
        spec.name,
        spec.version,
        _describe(config.inputs),
        _describe(config.outputs),
        load_seconds,
        latency,
        warnings=tuple(warnings),
    ), runtime


def _choose_threads(spec: ModelVersionSpec, runtime: Runtime, feed: dict[str, np.ndarray]) -> Runtime:
    """An ONNX Runtime engine on CPU whose model.toml leaves the threads out: reloaded on one thread when
    its measured cost says it is light (see runtimes.threads). A heavy one keeps what it was opened
    with: the policy's cores, or this process's share where a launcher set one (LEANSERVE_ENGINE_THREADS).
    """
    config = spec.config
    options = config.runtime
    loaded: RuntimeOptions | None = getattr(runtime, "options", None)
    if config.platform != "onnxruntime" or options.intra_op_threads or loaded is None:
        return runtime
    if runtime.providers != ("CPUExecutionProvider",):
        return runtime
    one = {name: a[:1] for name, a in feed.items()} if config.batching else feed
    cost = _median_seconds(runtime, one)
    plan = plan_threads(cost, available_cores(), 0, options.allow_spinning)
    light = plan.threads == 1 and loaded.intra_op_threads != 1
    log.info(
        "model %s version %d: %d ONNX Runtime thread(s), spinning %s (%s)",
        spec.name,
        spec.version,
        plan.threads if light else loaded.intra_op_threads,
        "on" if (plan.spinning if light else loaded.allow_spinning) else "off",
        plan.reason,
    )
    if not light:
        return runtime
    runtime.close()
    chosen = replace(options, intra_op_threads=1, allow_spinning=plan.spinning)
    runtime = load_runtime(spec.path, config.platform, chosen)
    runtime.run(one)  # the new session's first run allocates its arena here, not under load
    return runtime


def _median_seconds(runtime: Runtime, feed: dict[str, np.ndarray], runs: int = 7) -> float:
    times = []
    for _ in range(runs):
        t = time.perf_counter()
        runtime.run(feed)
        times.append(time.perf_counter() - t)
    return sorted(times)[runs // 2]


def _check_outputs(spec: ModelVersionSpec, outputs: dict[str, np.ndarray], rows: int | None) -> None:
    for o in spec.config.outputs:
        got = outputs.get(o.name)
        if got is None:
            raise LeanserveError(f"the warm-up returned no output {o.name!r}")
        if o.datatype != "BYTES" and got.dtype != numpy_dtype(o.datatype):
            raise LeanserveError(f"output {o.name!r} came back as {got.dtype}, declared {o.datatype}")
        if rows is not None and (got.ndim == 0 or got.shape[0] != rows):
            raise LeanserveError(
                f"output {o.name!r} has shape {list(got.shape)} for a batch of {rows}",
                hint="set max_batch_size = 0 if the model does not batch along dimension 0",
            )


def _largest_batch(runtime: Runtime, spec: ModelVersionSpec, feed: dict[str, np.ndarray]) -> list[str]:
    """Run the samples tiled to max_batch_size rows; a failure is a warning (the rows are repeats)."""
    largest = spec.config.max_batch_size or 0
    if _rows(feed) >= largest:
        return []
    big = tile(feed, largest)
    try:
        outputs = runtime.run(big)
        _check_outputs(spec, outputs, largest)
    except Exception as e:
        return [
            f"a batch of {largest} rows (max_batch_size) fails: {_reason(e)}; "
            "requests that batch up to it will fail too: lower max_batch_size"
        ]
    return []


def _rows(feed: dict[str, np.ndarray]) -> int:
    return len(next(iter(feed.values()))) if feed else 0


def _shapes(feed: dict[str, np.ndarray]) -> str:
    return ", ".join(f"{name} {list(a.shape)}" for name, a in feed.items())


def _reason(e: BaseException) -> str:
    text = str(e) if isinstance(e, LeanserveError) else f"{type(e).__name__}: {e}"
    return text.strip()


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
            if check.ok:
                check = _check_handler(check, entry.directory, spec)
            results.append(check)
    return CheckReport(tuple(results))


def _check_handler(check: VersionCheck, model_dir: Path, spec: ModelVersionSpec) -> VersionCheck:
    """A version with ``handler.py`` (operator-trusted code) fails the check if the file does not import."""
    from .processing import handler_config, load_handler

    hc = handler_config(spec.config, model_dir)
    if hc is None:
        return check
    try:
        load_handler(model_dir, spec.version, hc)
    except LeanserveError as e:
        return replace(check, error=str(e))
    return check
