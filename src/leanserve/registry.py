"""The model versions the server knows, which of them are resident, and the one way to a running one.

Every version in the repository is known with its completed configuration whether or not its
engine is loaded, so metadata and configuration answer for an unloaded model. A request reaches
an engine only through :meth:`ModelRegistry.acquire` (which may wait for a load) and gives it
back with :meth:`ModelRegistry.release`; a version with acquired requests is never unloaded.

Resident versions share one memory budget, in bytes *measured* as the resident-set growth over
each version's load and warm-up (loads run one at a time, so the figure is attributable). To
make room, the least recently used unacquired ``on_demand`` versions are unloaded first
(:mod:`leanserve.eviction` decides), and their freed heap is handed back to the system.

State is touched on the event loop only; engines load and close on one loader thread.
"""

from __future__ import annotations

import asyncio
import enum
import functools
import logging
import time
from collections.abc import Coroutine
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .batching import Batcher
from .check import check_version
from .config import HandlerConfig, LoadPolicy, ModelConfig, version_number
from .device_memory import DeviceReading, device_growth, read_device_memory
from .errors import ConfigError, DeadlineExceeded, LeanserveError, ModelNotFound, ModelNotReady
from .eviction import Resident, choose_victims
from .memory import format_size, map_large_allocations, release_freed_memory, resident_bytes
from .processing import Handler, Processor, handler_config, load_handler, model_caller
from .repository import (
    ModelEntry,
    ModelVersionSpec,
    model_fingerprint,
    resolve_version,
    safe_model_name,
    scan_model,
    scan_repository,
)
from .runtimes import Runtime, prime_engine
from .stats import ModelStats

log = logging.getLogger("leanserve.registry")

NOT_LOADED = "not loaded (on demand): the next inference request loads it"
OPERATOR_UNLOADED = "unloaded through the control API"


class NoRoom(ModelNotReady):
    """The budget is held by versions in use or pinned: a load cannot start now."""


class State(enum.Enum):
    LOADING = "LOADING"
    READY = "READY"
    UNAVAILABLE = "UNAVAILABLE"
    UNLOADING = "UNLOADING"


@dataclass(frozen=True, slots=True)
class RegistryOptions:
    memory_budget: int | None = None  # bytes; None: no budget
    default_load: LoadPolicy = "always"  # for models whose model.toml does not say
    load_timeout_seconds: float = 60.0  # longest a request waits for its model to load
    # Only these models of the repository (a Ray Serve replica serves one); None: every model.
    models: frozenset[str] | None = None


@dataclass(frozen=True, slots=True, eq=False)
class Lease:
    """A running version, held by one request from acquire to release. One per loaded version."""

    name: str
    version: int
    config: ModelConfig
    # A Processor for a version with a handler, ragged inputs or pipeline steps (leanserve.processing).
    batcher: Batcher | Processor
    stats: ModelStats
    slot: _Slot


@dataclass(frozen=True, slots=True)
class VersionSnapshot:
    """What handlers, metrics and the index may know of a version: no engine, no batcher."""

    name: str
    version: int
    state: State
    reason: str
    load: LoadPolicy
    config: ModelConfig | None  # None when the version's files could not be read
    memory_bytes: int  # measured (or declared) size; 0 before the first load
    memory_declared: bool
    resident: bool
    acquired: int
    queued: int
    providers: tuple[str, ...]
    stats: ModelStats
    failed: bool = False  # it cannot load until its files change or the control API loads it again

    @property
    def ready(self) -> bool:
        return self.state is State.READY


@dataclass(frozen=True, slots=True)
class ModelSnapshot:
    name: str
    error: str
    default_version: int | None
    versions: tuple[VersionSnapshot, ...]

    @property
    def ready(self) -> bool:
        return any(v.ready for v in self.versions)


class _Slot:
    """One version's mutable state, owned by the registry and changed on the event loop only."""

    __slots__ = (
        "acquired",
        "batcher",
        "drained",
        "failure",
        "last_used",
        "lease",
        "load",
        "memory_bytes",
        "memory_declared",
        "name",
        "operator_unloaded",
        "reason",
        "runtime",
        "spec",
        "state",
        "stats",
        "transition",
        "version",
    )

    def __init__(self, name: str, version: int, spec: ModelVersionSpec | None, failure: str, load: LoadPolicy) -> None:
        self.name = name
        self.version = version
        self.spec = spec
        self.load: LoadPolicy = load
        self.stats = ModelStats(name, version)
        self.failure = failure  # set: the version cannot load until its files change or the API loads it
        self.state = State.UNAVAILABLE
        self.reason = failure or NOT_LOADED
        self.runtime: Runtime | None = None
        self.batcher: Batcher | Processor | None = None
        self.lease: Lease | None = None
        self.acquired = 0
        self.last_used = 0.0
        # A load or unload in progress; a load's result is the error its waiters should get, if any.
        self.transition: asyncio.Future[LeanserveError | None] | None = None
        self.drained: asyncio.Event | None = None  # set when ``acquired`` drops to 0, if someone waits
        self.operator_unloaded = False
        declared = spec.config.memory_bytes if spec is not None else None
        self.memory_bytes = declared or 0
        self.memory_declared = declared is not None

    @property
    def resident(self) -> bool:
        return self.runtime is not None

    def snapshot(self) -> VersionSnapshot:
        return VersionSnapshot(
            self.name,
            self.version,
            self.state,
            self.reason,
            self.load,
            self.spec.config if self.spec is not None else None,
            self.memory_bytes,
            self.memory_declared,
            self.resident,
            self.acquired,
            self.batcher.queued if self.batcher is not None else 0,
            self.runtime.providers if self.runtime is not None else (),
            self.stats,
            bool(self.failure),
        )


@dataclass(slots=True)
class _Model:
    name: str
    directory: Path
    config: ModelConfig | None = None
    versions: dict[int, _Slot] = field(default_factory=dict)
    error: str = ""  # a model-level problem (its model.toml)
    fingerprint: object = None
    default: _Slot | None = None  # answers unversioned requests; kept current by _choose_default


@dataclass(frozen=True, slots=True)
class _Loaded:
    runtime: Runtime | None
    error: str
    warnings: tuple[str, ...]
    seconds: float
    grew: int  # resident bytes the load and warm-up added
    device_grew: DeviceReading = field(default_factory=dict)  # device memory they added, per GPU (NVML)
    handler_config: HandlerConfig | None = None  # set: the version is served through a Processor
    handler: Handler | None = None


class ModelRegistry:
    def __init__(self, repository: Path, options: RegistryOptions | None = None) -> None:
        self.repository = Path(repository)
        self.options = options or RegistryOptions()
        self._models: dict[str, _Model] = {}
        self._loader = ThreadPoolExecutor(1, thread_name_prefix="leanserve-loader")
        self._load_lock: asyncio.Lock | None = None  # created on the serving loop
        self._room: asyncio.Event | None = None  # set by a release while a load waits for room
        self._apply_lock: asyncio.Lock | None = None
        self.baseline_bytes = 0  # the process's resident memory with no model loaded
        self.loaded = False  # True once every "always" version has been tried at start-up
        self.evictions = 0
        self._tasks: set[asyncio.Task[None]] = set()

    # ---- the request path ------------------------------------------------------------------

    def acquire_now(self, name: str, version: str | None) -> Lease | None:
        """The version's lease when it is resident; None when it must load first (see :meth:`acquire`).

        Raises 404 for an unknown model or version, 503 for one that cannot load.
        """
        model = self._models.get(name)
        slot = model.default if model is not None and version is None else None
        # The common request (a model's default version, ready) without the three calls of _select;
        # a slot there that failed or was unloaded by the operator takes them, for their 503.
        if slot is None or slot.failure or slot.operator_unloaded:
            slot = self._select(name, version)
        lease = slot.lease
        if lease is None or slot.state is not State.READY:
            return None
        slot.acquired += 1
        slot.last_used = time.monotonic()
        return lease

    async def acquire(self, name: str, version: str | None, deadline: float | None = None) -> Lease:
        """The version's lease, loading it first when needed (one load however many ask).

        Waits at most the load timeout, or until ``deadline`` (event-loop time) when that comes first.
        """
        loop = asyncio.get_running_loop()
        timeout = self.options.load_timeout_seconds
        load_end = loop.time() + timeout
        end = load_end if deadline is None else min(deadline, load_end)
        while True:
            lease = self.acquire_now(name, version)
            if lease is not None:
                return lease
            slot = self._select(name, version)
            transition = slot.transition or self._start_load(slot)
            remaining = end - loop.time()
            try:
                if remaining <= 0:
                    raise TimeoutError
                error = await asyncio.wait_for(asyncio.shield(transition), remaining)
            except TimeoutError:
                state = slot.state.value.lower()
                if end < load_end:  # the request's own deadline came first
                    raise DeadlineExceeded(
                        f"the request's deadline passed while model {name!r} version {slot.version} was {state}"
                    ) from None
                raise ModelNotReady(
                    f"model {name!r} version {slot.version} is still {state} after {timeout:g} s",
                    hint="retry shortly",
                    retry_after=max(1, round(slot.stats.load_seconds) or 1),
                ) from None
            if error is not None:
                raise error

    def release(self, lease: Lease) -> None:
        slot = lease.slot
        slot.acquired -= 1
        if slot.acquired == 0:
            if slot.drained is not None:
                slot.drained.set()
            if self._room is not None:
                self._room.set()

    def stats_of(self, name: str, version: str | None) -> ModelStats | None:
        """The statistics a failed request counts against, without loading anything."""
        model = self._models.get(name)
        if model is None:
            return None
        if version is None:
            return model.default.stats if model.default is not None else None
        number = version_number(version)
        slot = model.versions.get(number) if number is not None else None
        return slot.stats if slot is not None else None

    # ---- what handlers and metrics read ------------------------------------------------------

    def describe(self, name: str, version: str | None) -> VersionSnapshot:
        """The version a request would reach, loaded or not (404 for unknown ones)."""
        return self._find(name, version).snapshot()

    def model(self, name: str) -> ModelSnapshot:
        return self._model_snapshot(self._model(name))

    def snapshot(self) -> tuple[ModelSnapshot, ...]:
        return tuple(self._model_snapshot(m) for m in self._models.values())

    def used_bytes(self) -> int:
        """Budget held: the measured size of every resident or loading version."""
        return sum(
            s.memory_bytes for m in self._models.values() for s in m.versions.values() if s.resident or s.transition
        )

    # ---- lifecycle ---------------------------------------------------------------------------

    async def load_all(self) -> None:
        """Read the repository; load every ``always`` version, one at a time, within the budget."""
        self._bind_loop()
        map_large_allocations()  # so that unloading a model gives its memory back
        loop = asyncio.get_running_loop()
        names = await loop.run_in_executor(self._loader, self._model_names)
        for name in names:
            await self._apply(name)
        platforms: set[str] = {
            s.spec.config.platform for m in self._models.values() for s in m.versions.values() if s.spec
        }
        # Measured after the configurations are read (ONNX files parsed and dropped) and the
        # engines primed, before any model loads: what stays of the server without models.
        self.baseline_bytes = await loop.run_in_executor(self._loader, _baseline, platforms)
        for model in list(self._models.values()):
            for slot in list(model.versions.values()):
                if slot.load == "always" and not slot.failure:
                    await self._start_load(slot)
        self.loaded = True

    async def load(self, name: str) -> ModelSnapshot:
        """The control API's load: pick up changed files, then load every version now (failed ones again)."""
        safe_model_name(name)
        self._bind_loop()
        await self._apply(name)
        model = self._model(name)
        if model.error and not model.versions:
            raise ConfigError(str(model.directory), None, model.error)
        for slot in list(model.versions.values()):
            slot.operator_unloaded = False
            if not slot.resident and slot.spec is not None:
                slot.failure = ""
                await (slot.transition or self._start_load(slot))
        snap = self.model(name)
        failed = [v for v in snap.versions if not v.ready]
        if failed:
            raise ModelNotReady(
                f"model {name!r} failed to load: " + "; ".join(f"version {v.version}: {v.reason}" for v in failed)
            )
        return snap

    async def unload(self, name: str) -> ModelSnapshot:
        """The control API's unload: no new requests; those acquired finish; then the engines go."""
        model = self._model(name)
        for slot in list(model.versions.values()):
            slot.operator_unloaded = True
            if slot.transition is not None:
                await slot.transition
            if slot.resident:
                await self._unload(slot, "operator", OPERATOR_UNLOADED)
            slot.reason = OPERATOR_UNLOADED
        self._choose_default(model)
        return self.model(name)

    async def refresh(self) -> list[str]:
        """Pick up changed, added and removed models (hot swap); returns the names that changed."""
        self._bind_loop()
        loop = asyncio.get_running_loop()
        names = set(await loop.run_in_executor(self._loader, self._model_names)) | set(self._models)
        changed = []
        for name in sorted(names):
            if await self._apply(name):
                changed.append(name)
        return changed

    async def watch(self, every_seconds: float) -> None:
        """Call :meth:`refresh` every ``every_seconds`` until cancelled."""
        while True:
            await asyncio.sleep(every_seconds)
            try:
                changed = await self.refresh()
            except Exception:
                log.exception("repository poll failed")
                continue
            if changed:
                log.info("repository changed: %s", ", ".join(changed))

    async def close(self) -> None:
        """Let queued work finish, then release every engine."""
        for model in self._models.values():
            for slot in model.versions.values():
                if slot.transition is not None:
                    await asyncio.shield(slot.transition)
                if slot.resident:
                    await self._unload(slot, "shutdown", "server shutting down", wait=False)
        self._loader.shutdown(wait=True)

    # ---- selection -------------------------------------------------------------------------

    def _model(self, name: str) -> _Model:
        model = self._models.get(name)
        if model is None:
            safe_model_name(name)  # a hostile name gets its own message
            raise ModelNotFound(
                f"unknown model {name!r}",
                hint=f"models in this repository: {', '.join(sorted(self._models)) or 'none'}",
            )
        return model

    def _find(self, name: str, version: str | None) -> _Slot:
        model = self._model(name)
        if version is None:
            if model.default is None:
                raise ModelNotReady(f"model {name!r} is not available: {model.error or 'it has no version'}")
            return model.default
        number = version_number(version)
        slot = model.versions.get(number) if number is not None else None
        if slot is None:
            raise ModelNotFound(
                f"model {name!r} has no version {version if number is not None else repr(version[:40])}",
                hint=f"versions: {', '.join(str(v) for v in sorted(model.versions)) or 'none'}",
            )
        return slot

    def _select(self, name: str, version: str | None) -> _Slot:
        """The version to answer with; 503 when it cannot load."""
        slot = self._find(name, version)
        if slot.failure or slot.operator_unloaded:
            raise ModelNotReady(
                f"model {name!r} version {slot.version} is {slot.state.value}: {slot.reason}",
                hint=f"POST /v2/repository/models/{name}/load loads it" if slot.operator_unloaded else None,
            )
        return slot

    def _choose_default(self, model: _Model) -> None:
        """Configured default_version if it can serve, else the highest ready, else the highest loadable."""
        usable = {v: s for v, s in model.versions.items() if not s.failure and not s.operator_unloaded}
        configured = model.config.default_version if model.config is not None else None
        if configured is not None and configured in usable:
            model.default = usable[configured]
            return
        ready = [v for v, s in usable.items() if s.state is State.READY]
        if ready:
            model.default = usable[max(ready)]
        elif usable:
            model.default = usable[max(usable)]
        else:
            model.default = model.versions[max(model.versions)] if model.versions else None

    # ---- loading and unloading -----------------------------------------------------------------

    def _bind_loop(self) -> None:
        if self._load_lock is None:
            self._load_lock = asyncio.Lock()

    def _start_load(self, slot: _Slot) -> asyncio.Future[LeanserveError | None]:
        self._bind_loop()
        loop = asyncio.get_running_loop()
        transition: asyncio.Future[LeanserveError | None] = loop.create_future()
        slot.transition = transition
        slot.state, slot.reason = State.LOADING, "loading"
        self._spawn(self._load(slot, transition))
        return transition

    def _spawn(self, work: Coroutine[Any, Any, None]) -> None:
        # The loop keeps only weak references to tasks: hold them until they finish.
        task = asyncio.get_running_loop().create_task(work)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _load(self, slot: _Slot, transition: asyncio.Future[LeanserveError | None]) -> None:
        assert self._load_lock is not None and slot.spec is not None
        outcome: LeanserveError | None = None
        try:
            async with self._load_lock:
                budget = self.options.memory_budget
                if budget is not None and slot.memory_bytes > budget:  # known (declared or measured before)
                    self._fail(slot, self._too_big(slot, budget))
                    return
                await self._make_room(slot, slot.memory_bytes or _file_bytes(slot.spec.path))
                loaded = await asyncio.get_running_loop().run_in_executor(self._loader, _load_engine, slot.spec)
                for warning in loaded.warnings:
                    log.warning("model %s version %d: %s", slot.name, slot.version, warning)
                if loaded.runtime is None:
                    self._fail(slot, loaded.error)
                    return
                self._install(slot, loaded)
                if budget is not None and slot.memory_bytes > budget:
                    await self._unload(slot, "evicted", "", wait=False)
                    self._fail(slot, self._too_big(slot, budget))
                    return
                # The measured size may exceed the estimate the room was made for.
                await self._make_room(slot, slot.memory_bytes)
        except NoRoom as e:  # for now: the next request tries again
            if slot.resident:
                await self._unload(slot, "evicted", NOT_LOADED, wait=False)
            slot.state, slot.reason = State.UNAVAILABLE, NOT_LOADED
            log.warning("model %s version %d: %s", slot.name, slot.version, e)
            outcome = e
        except LeanserveError as e:
            self._fail(slot, str(e))
        except Exception as e:  # a load must never leave waiters hanging
            log.exception("model %s version %d: load failed", slot.name, slot.version)
            self._fail(slot, f"{type(e).__name__}: {e}")
        finally:
            slot.transition = None
            transition.set_result(outcome)
            model = self._models.get(slot.name)
            if model is not None:
                self._choose_default(model)

    def _install(self, slot: _Slot, loaded: _Loaded) -> None:
        assert slot.spec is not None and loaded.runtime is not None
        config = slot.spec.config
        if loaded.handler_config is not None or config.ragged:
            try:
                slot.batcher = Processor(
                    loaded.runtime, config, slot.stats, loaded.handler_config, loaded.handler, model_caller(self)
                )
            except LeanserveError:  # a pipeline step naming what does not exist: the version fails to load
                loaded.runtime.close()
                raise
        else:
            slot.batcher = Batcher(
                loaded.runtime,
                config.max_batch_size or 0,
                config.dynamic_batching,
                slot.stats,
                run_timeout=config.runtime.timeout_ms / 1000.0,
                on_stuck=functools.partial(self._stuck, slot),
            )
        slot.runtime = loaded.runtime
        if not slot.memory_declared:  # the budget counts device memory too: one figure per version
            slot.memory_bytes = loaded.grew + sum(loaded.device_grew.values())
        slot.stats.device_memory_bytes = dict(loaded.device_grew)
        slot.lease = Lease(slot.name, slot.version, config, slot.batcher, slot.stats, slot)
        slot.stats.loads += 1
        slot.stats.load_seconds = loaded.seconds
        slot.stats.memory_bytes = slot.memory_bytes
        slot.state, slot.reason = State.READY, ""
        slot.last_used = time.monotonic()
        log.info(
            "model %s version %d ready (%.2f s, %s)",
            slot.name,
            slot.version,
            loaded.seconds,
            format_size(slot.memory_bytes),
        )

    @staticmethod
    def _too_big(slot: _Slot, budget: int) -> str:
        how = "declared" if slot.memory_declared else "measured"
        return (
            f"needs {format_size(slot.memory_bytes)} ({how}), more than the whole memory budget of "
            f"{format_size(budget)}; raise --memory-budget to serve it"
        )

    def _stuck(self, slot: _Slot, reason: str) -> None:
        """Its engine hung in a run and was not cancelled: unavailable (not ready), with the reason."""
        slot.failure = reason
        slot.state, slot.reason = State.UNAVAILABLE, reason

    def _fail(self, slot: _Slot, error: str) -> None:
        slot.failure = error or "failed its start-up check"
        slot.state, slot.reason = State.UNAVAILABLE, slot.failure
        slot.stats.load_failures += 1
        log.error("model %s version %d: %s", slot.name, slot.version, slot.failure)

    async def _make_room(self, loading: _Slot, need: int) -> None:
        """Unload least recently used versions until ``need`` more bytes fit; wait for busy ones."""
        budget = self.options.memory_budget
        if budget is None:
            return
        loop = asyncio.get_running_loop()
        end = loop.time() + self.options.load_timeout_seconds
        while True:
            residents = [
                # A version being replaced stays while its successor loads: requests still use it.
                Resident(s, s.memory_bytes, s.last_used, s.acquired, s.load == "always" or _same(s, loading))
                for m in self._models.values()
                for s in m.versions.values()
                if s.resident and s is not loading and s.state is State.READY
            ]
            accounted = sum(r.bytes for r in residents)
            # What the process really holds counts too: memory an unload did not give back.
            own = loading.memory_bytes if loading.resident else 0
            outside = max(accounted, resident_bytes() - self.baseline_bytes - own)
            victims = choose_victims(residents, need, outside, budget)
            if victims is None:
                victims = choose_victims(residents, need, accounted, budget)
            if victims is not None:
                for key in victims:
                    victim: _Slot = key  # type: ignore[assignment]
                    self.evictions += 1
                    await self._unload(victim, "evicted", NOT_LOADED, wait=False)
                return
            remaining = end - loop.time()
            # Only requests finishing can make room; pinned versions never leave.
            in_use = any(r.acquired and not r.pinned for r in residents)
            if remaining <= 0 or not in_use:
                busy = sum(r.bytes for r in residents if r.acquired or r.pinned)
                raise NoRoom(
                    f"model {loading.name!r} version {loading.version} needs about {format_size(need)} but "
                    f"{format_size(busy)} of the {format_size(budget)} budget is held by versions in use or "
                    'loaded with load = "always"',
                    hint='retry later, raise --memory-budget, or make fewer models load = "always"',
                    retry_after=1,
                )
            self._room = asyncio.Event()
            try:
                await asyncio.wait_for(self._room.wait(), remaining)
            except TimeoutError:
                pass
            finally:
                self._room = None

    async def _unload(self, slot: _Slot, why: str, reason: str, wait: bool = True) -> None:
        """Stop routing to ``slot``; when its requests are done (``wait``), close its engine."""
        loop = asyncio.get_running_loop()
        transition: asyncio.Future[LeanserveError | None] = loop.create_future()
        own_transition = slot.transition is None
        if own_transition:
            slot.transition = transition
        slot.state, slot.reason = State.UNLOADING, "unloading"
        try:
            if wait and slot.acquired:
                slot.drained = asyncio.Event()
                await slot.drained.wait()
                slot.drained = None
            batcher, runtime = slot.batcher, slot.runtime
            slot.batcher = slot.lease = None
            if batcher is not None:
                await batcher.close()
            returned = await loop.run_in_executor(self._loader, _close_engine, runtime)
            slot.runtime = None
            slot.stats.unloads[why] += 1
            # Resident memory only: what came back is read from the resident set (device memory is
            # counted in the size, but its return is not measured).
            host_bytes = slot.memory_bytes - sum(slot.stats.device_memory_bytes.values())
            slot.stats.memory_not_returned_bytes = max(0, host_bytes - returned)
            log.info(
                "model %s version %d unloaded (%s): %s of %s returned to the system",
                slot.name,
                slot.version,
                why,
                format_size(max(0, returned)),
                format_size(slot.memory_bytes),
            )
        finally:
            slot.state, slot.reason = State.UNAVAILABLE, reason or slot.reason
            if own_transition:
                slot.transition = None
                transition.set_result(None)

    # ---- reading the repository (start-up, hot swap, control API) ---------------------------

    def _model_names(self) -> list[str]:
        names = [m.name for m in scan_repository(self.repository, names_only=True).models]
        only = self.options.models
        return names if only is None else [n for n in names if n in only]

    async def _apply(self, name: str) -> bool:
        """Bring one model in line with its files; returns whether anything changed."""
        if self._apply_lock is None:
            self._apply_lock = asyncio.Lock()
        async with self._apply_lock:  # a poll and a control-API load never interleave
            return await self._apply_locked(name)

    async def _apply_locked(self, name: str) -> bool:
        loop = asyncio.get_running_loop()
        directory = self.repository / name
        fingerprint = await loop.run_in_executor(self._loader, model_fingerprint, directory)
        model = self._models.get(name)
        # Unchanged files are not read again: parsing a model file for its signature holds the
        # GIL for tens of milliseconds and would stall the models being served.
        if model is not None and model.fingerprint == fingerprint:
            return False
        if fingerprint is None:  # the folder is gone
            if model is not None:
                del self._models[name]
                for slot in model.versions.values():
                    self._spawn(self._retire(slot, "removed"))
            return model is not None
        entry, specs = await loop.run_in_executor(self._loader, _read_model, directory)
        if model is None:
            model = self._models[name] = _Model(name, directory)
        model.fingerprint = fingerprint
        if entry.config is None:
            model.error = str(entry.error)
            if model.versions:
                model.error += " (still serving the previous configuration)"
            log.error("model %s: %s", name, model.error)
            return True
        model.error = ""
        previous = model.versions
        # While the model serves, new files load beside the old ones before the switch, so a
        # broken new version is found before any request reaches it.
        serving = {v: s for v, s in previous.items() if s.resident and not s.failure}
        load: LoadPolicy = entry.config.load or self.options.default_load
        new_versions: dict[int, _Slot] = {}
        for version in entry.versions:
            spec, error = specs[version]
            old = previous.get(version)
            slot = _Slot(name, version, spec, error, load)
            if old is not None:
                slot.stats = old.stats
                if not slot.memory_declared and old.memory_bytes:
                    slot.memory_bytes = old.memory_bytes  # a good estimate until measured again
            if not error and (serving or (self.loaded and load == "always")):
                await self._start_load(slot)
            new_versions[version] = slot
        failed = [s for s in new_versions.values() if s.failure]
        if serving and failed and not any(not s.failure for s in new_versions.values() if s.version not in serving):
            # Nothing new can serve: keep what served, with the new files' error beside it.
            problem = "; ".join(f"version {s.version}: {s.failure}" for s in failed)
            for version, old in serving.items():
                if new_versions.get(version) is None or new_versions[version].failure:
                    old.reason = f"new files failed to load, still serving the previous ones ({problem})"
                    new_versions[version] = old
            log.error("model %s: new files failed to load, still serving the previous ones: %s", name, problem)
        model.config = entry.config
        model.versions = dict(sorted(new_versions.items()))  # the switch: one assignment, between two requests
        self._choose_default(model)
        for version, old in previous.items():
            if model.versions.get(version) is not old:
                self._spawn(self._retire(old, "replaced" if version in model.versions else "removed"))
        return True

    async def _retire(self, slot: _Slot, why: str) -> None:
        if slot.transition is not None:
            await asyncio.shield(slot.transition)
        if slot.resident:
            await self._unload(slot, why, f"{why}; no longer served")

    def _model_snapshot(self, model: _Model) -> ModelSnapshot:
        return ModelSnapshot(
            model.name,
            model.error,
            model.default.version if model.default is not None else None,
            tuple(s.snapshot() for _, s in sorted(model.versions.items())),
        )


# ---- on the loader thread ----------------------------------------------------------------------


def _read_model(directory: Path) -> tuple[ModelEntry, dict[int, tuple[ModelVersionSpec | None, str]]]:
    """The model's entry and each selected version's completed configuration (or why it has none)."""
    entry = scan_model(directory)
    specs: dict[int, tuple[ModelVersionSpec | None, str]] = {}
    if entry.config is not None:
        for version in entry.versions:
            try:
                specs[version] = (resolve_version(entry.directory, entry.config, version), "")
            except LeanserveError as e:
                specs[version] = (None, str(e))
            except Exception as e:
                specs[version] = (None, f"{type(e).__name__}: {e}")
    return entry, specs


def _load_engine(spec: ModelVersionSpec) -> _Loaded:
    """Load and check one version; what it added to the resident set is its size.

    No malloc_trim around the measurement: large blocks are mmapped (see map_large_allocations),
    so a load's transient copies are unmapped when freed, and a trim stalls every thread that
    allocates meanwhile (it holds the malloc arenas: about 2.5 ms, measured here).
    """
    device_before = read_device_memory()
    before = resident_bytes()
    start = time.perf_counter()
    check, runtime = check_version(spec)
    seconds = time.perf_counter() - start
    warnings: tuple[str, ...] = check.warnings
    if runtime is None:
        return _Loaded(None, check.error or "failed its start-up check", warnings, seconds, 0)
    # The handler file is operator-trusted code of the repository: imported here, at load, only.
    model_dir = spec.path.parent.parent
    hc = handler_config(spec.config, model_dir)
    try:
        handler = load_handler(model_dir, spec.version, hc) if hc is not None else None
    except LeanserveError as e:
        runtime.close()
        return _Loaded(None, str(e), warnings, seconds, 0)
    seconds = time.perf_counter() - start
    grew = max(0, resident_bytes() - before)
    device = device_growth(device_before, read_device_memory())
    return _Loaded(runtime, "", warnings, seconds, grew, device, hc, handler)


def _close_engine(runtime: Runtime | None) -> int:
    """Close an engine and give its memory back; returns the resident bytes that came back."""
    before = resident_bytes()
    if runtime is not None:
        runtime.close()
    del runtime
    release_freed_memory()
    return before - resident_bytes()


def _same(a: _Slot, b: _Slot) -> bool:
    return a.name == b.name and a.version == b.version


def _baseline(platforms: set[str]) -> int:
    for platform in sorted(platforms):
        try:
            prime_engine(platform)
        except Exception as e:  # a missing engine fails its models' loads, with their own message
            log.warning("could not prepare the %s engine: %s", platform, e)
    return _settled_resident_bytes()


def _settled_resident_bytes() -> int:
    release_freed_memory()
    return resident_bytes()


def _file_bytes(path: Path) -> int:
    """A first guess at a version's size before it was ever measured: its files on disk."""
    try:
        return sum(p.stat().st_size for p in path.parent.iterdir() if p.is_file())
    except OSError:
        return 0


__all__ = ["Lease", "ModelRegistry", "ModelSnapshot", "RegistryOptions", "State", "VersionSnapshot"]
