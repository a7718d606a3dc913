"""``serve --workers N``: N worker processes on one port, each its own event loop and engines.

One event loop answers on one core; a machine with more cores serves more with more processes.
The supervisor (this process) starts N workers, each a whole :class:`~.app.Server` listening on
the same port with SO_REUSEPORT, so the kernel spreads new connections between them (by a hash of
the connection: no accept lock, no thundering herd). What the workers share, they share through
files built for several writers: the failure log and the experiments' records are SQLite (WAL)
in the state folder, and ``/metrics`` adds every worker's exposition up at scrape time
(:mod:`.siblings`). The memory budget is divided between them, and so are the engine threads of
models that leave them to the engine (``intra_op_threads = 0``).

A worker that dies (after it was ready, or killed by a signal while it loaded) is replaced, after a
back-off when it keeps dying; one that fails before it was ever ready stops the whole server with
its error (a port taken, a mistake in experiments.toml: a replacement would fail the same way).
SIGTERM or SIGINT is passed to every worker, each drains its in-flight requests, and the supervisor
exits when all have.

Per worker, not shared: the dashboard's series, ``/v2/models/stats``, model control (a load or
unload reaches the worker that got it) and experiments started through the API.
"""

from __future__ import annotations

import contextlib
import logging
import multiprocessing
import multiprocessing.connection
import os
import shutil
import signal
import socket
import tempfile
import time
from dataclasses import dataclass, replace
from multiprocessing.connection import Connection
from multiprocessing.process import BaseProcess
from pathlib import Path
from typing import Final, Literal

from ..errors import ServerError, UsageError
from ..protocol import Limits
from ..registry import RegistryOptions
from ..runtimes import ENGINE_THREADS_ENV
from ..runtimes.threads import available_cores
from .auth import Tokens
from .experiments import ExperimentOptions
from .observability import ObservabilityOptions

log = logging.getLogger("leanserve.server")

# Where the workers' metric sockets live; default: a fresh temporary folder (socket paths must
# stay under ~100 bytes, which a repository's own folder may not).
WORKER_DIR_ENV: Final = "LEANSERVE_WORKER_DIR"
# A worker that dies more than this long after its start is a fresh failure: its back-off resets.
STABLE_AFTER_S: Final = 30.0
MAX_RESTART_DELAY_S: Final = 10.0


@dataclass(frozen=True, slots=True)
class WorkerPlan:
    """How many workers, and each one's share of the memory budget and of the cores."""

    count: int
    memory_budget: int | None  # per worker; None: no budget
    engine_threads: int  # per worker, for models that leave threads to the engine


def plan_workers(requested: int | Literal["auto"], cpus: int, memory_budget: int | None) -> WorkerPlan:
    """The plan for ``--workers requested`` on a machine with ``cpus`` usable cores."""
    count = max(1, cpus) if requested == "auto" else requested
    if count < 1:
        raise UsageError(f"--workers must be 1 or more, or auto, not {count}")
    budget = None if memory_budget is None else memory_budget // count
    if budget is not None and budget <= 0:
        raise UsageError(f"a memory budget of {memory_budget} bytes cannot be divided between {count} workers")
    return WorkerPlan(count, budget, max(1, cpus // count))


def restart_delay(recent_failures: int) -> float:
    """Seconds before replacing a worker that died, after ``recent_failures`` quick deaths in a row."""
    if recent_failures <= 1:
        return 0.0
    return float(min(MAX_RESTART_DELAY_S, 0.25 * 2 ** (recent_failures - 2)))


def replaceable(was_ready: bool, exitcode: int | None) -> bool:
    """Whether a worker that exited is replaced (else the server stops with its error).

    Killed by a signal (a negative exit code: the OOM killer, an operator) is a death like any
    other, even while it loaded; exiting by itself before it was ever ready is a start-up that a
    replacement would repeat.
    """
    return was_ready or (exitcode is not None and exitcode < 0)


@dataclass(frozen=True, slots=True)
class WorkerSpec:
    """Everything a worker needs to build its server: what ``leanserve.serve`` takes, picklable."""

    repository: Path
    host: str
    port: int
    limits: Limits
    options: RegistryOptions
    tokens: Tokens | None
    poll_seconds: float | None
    observability: ObservabilityOptions | None
    grpc_port: int | None
    experiments: ExperimentOptions | None
    log_level: str | None = None  # None: the parent's logging is not configured again
    log_format: str = "text"
    shutdown_grace_seconds: float = 30.0
    idle_poll_seconds: float | None = None  # None: off, as for any server sharing its cores (idle_poll.py)


def worker_main(spec: WorkerSpec, index: int, directory: Path, engine_threads: int, conn: Connection) -> None:
    """A worker process: one server on the shared port until SIGTERM (the supervisor's)."""
    from ..logs import configure_logging
    from .app import run_event_loop

    if spec.log_level is not None:
        configure_logging(spec.log_level, spec.log_format)  # type: ignore[arg-type]
    os.environ.setdefault(ENGINE_THREADS_ENV, str(engine_threads))
    run_event_loop(_serve_worker(spec, index, directory, conn))


async def _serve_worker(spec: WorkerSpec, index: int, directory: Path, conn: Connection) -> None:
    import asyncio

    from .app import Server
    from .siblings import Siblings

    siblings: Siblings | None = None

    async def merged() -> tuple[bytes, bytes]:
        assert siblings is not None
        return await siblings.merged()

    server = Server(
        spec.repository,
        spec.host,
        spec.port,
        spec.limits,
        spec.shutdown_grace_seconds,
        options=spec.options,
        tokens=spec.tokens,
        poll_seconds=spec.poll_seconds,
        observability=spec.observability,
        grpc_port=spec.grpc_port,
        experiments=spec.experiments,
        reuse_port=True,
        metrics_source=merged,
        idle_poll_seconds=spec.idle_poll_seconds,
    )
    siblings = Siblings(directory, index, server.handlers.metrics)
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    try:
        await siblings.start()
        await server.start()
    except BaseException as e:
        conn.send(("failed", f"{type(e).__name__}: {e}"))
        await siblings.close()
        raise
    conn.send(("ready", os.getpid()))
    await stop.wait()
    await server.stop()
    await siblings.close()


class _Worker:
    __slots__ = ("conn", "failures", "index", "process", "ready", "started")

    def __init__(self, index: int) -> None:
        self.index = index
        self.process: BaseProcess | None = None
        self.conn: Connection | None = None
        self.ready = False
        self.started = 0.0
        self.failures = 0  # quick deaths in a row


class Supervisor:
    """Starts the workers, replaces those that die, and stops them all on SIGTERM or SIGINT."""

    def __init__(self, spec: WorkerSpec, plan: WorkerPlan, directory: Path | None = None) -> None:
        self.spec = replace(spec, options=replace(spec.options, memory_budget=plan.memory_budget))
        self.plan = plan
        given = directory or os.environ.get(WORKER_DIR_ENV)
        self._own_directory = not given
        self.directory = Path(given) if given else Path(tempfile.mkdtemp(prefix="leanserve-"))
        self._context = multiprocessing.get_context("spawn")  # fresh interpreters: no threads forked
        self._workers = [_Worker(i) for i in range(plan.count)]
        self._stopping = False
        self._reserved: list[socket.socket] = []

    def run(self) -> int:
        """Serve until SIGTERM/SIGINT; 0 after a clean drain, or raise when a worker cannot start."""
        previous = {sig: signal.signal(sig, self._on_signal) for sig in (signal.SIGINT, signal.SIGTERM)}
        try:
            self._reserve_ports()
            for worker in self._workers:
                self._start(worker)
            self._supervise()
        finally:
            self._stop_all()
            for sig, handler in previous.items():
                signal.signal(sig, handler)
            for s in self._reserved:
                s.close()
            if self._own_directory:
                shutil.rmtree(self.directory, ignore_errors=True)
        return 0

    def _on_signal(self, signum: int, frame: object) -> None:
        self._stopping = True

    def _reserve_ports(self) -> None:
        """Fix port 0 to one port for every worker: bound here (not listening) with SO_REUSEPORT."""
        spec = self.spec
        ports = {"port": spec.port, "grpc_port": spec.grpc_port}
        for field_name, port in ports.items():
            if port is None:
                continue
            s = socket.socket(socket.AF_INET6 if ":" in spec.host else socket.AF_INET)
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
            try:
                s.bind((spec.host, port))
            except OSError as e:
                s.close()
                raise ServerError(f"cannot listen on {spec.host}:{port}: {e}") from e
            self._reserved.append(s)
            self.spec = replace(self.spec, **{field_name: s.getsockname()[1]})
        log.info(
            "%d workers on http://%s:%d (memory budget each: %s, engine threads each: %d)",
            self.plan.count,
            spec.host,
            self.spec.port,
            "none" if self.plan.memory_budget is None else f"{self.plan.memory_budget} B",
            self.plan.engine_threads,
        )

    def _start(self, worker: _Worker) -> None:
        receive, send = self._context.Pipe(duplex=False)
        process = self._context.Process(
            target=worker_main,
            args=(self.spec, worker.index, self.directory, self.plan.engine_threads, send),
            name=f"leanserve-worker-{worker.index}",
        )
        process.start()
        send.close()
        worker.process, worker.conn, worker.ready, worker.started = process, receive, False, time.monotonic()

    def _supervise(self) -> None:
        while not self._stopping:
            waitables: list[object] = []
            for w in self._workers:
                if w.process is not None:
                    waitables.append(w.process.sentinel)
                if w.conn is not None:
                    waitables.append(w.conn)
            multiprocessing.connection.wait(waitables, timeout=0.5)  # type: ignore[arg-type]
            for worker in self._workers:
                self._check(worker)

    def _check(self, worker: _Worker) -> None:
        conn, process = worker.conn, worker.process
        if conn is not None:
            with contextlib.suppress(EOFError, OSError):
                while conn.poll():
                    kind, detail = conn.recv()
                    if kind == "ready":
                        worker.ready = True
                        log.info("worker %d ready (pid %s)", worker.index, detail)
                    elif kind == "failed" and not worker.ready:
                        raise ServerError(f"worker {worker.index} could not start: {detail}")
        if process is None or process.is_alive() or self._stopping:
            return
        exitcode = process.exitcode
        if not replaceable(worker.ready, exitcode):
            raise ServerError(f"worker {worker.index} exited with code {exitcode} before it was ready")
        lived = time.monotonic() - worker.started
        worker.failures = 1 if lived > STABLE_AFTER_S else worker.failures + 1
        delay = restart_delay(worker.failures)
        log.warning(
            "worker %d (pid %s) exited with code %s; replacing it%s",
            worker.index,
            process.pid,
            process.exitcode,
            f" in {delay:.2f} s" if delay else "",
        )
        if conn is not None:
            conn.close()
        worker.process = worker.conn = None
        deadline = time.monotonic() + delay
        while time.monotonic() < deadline and not self._stopping:
            time.sleep(0.05)
        if not self._stopping:
            self._start(worker)

    def _stop_all(self) -> None:
        """SIGTERM to every worker; each drains; those past the grace period are killed."""
        alive = [w.process for w in self._workers if w.process is not None and w.process.is_alive()]
        for p in alive:
            with contextlib.suppress(ProcessLookupError):
                os.kill(p.pid, signal.SIGTERM)  # type: ignore[arg-type]
        deadline = time.monotonic() + self.spec.shutdown_grace_seconds + 10.0
        for p in alive:
            p.join(max(0.0, deadline - time.monotonic()))
            if p.is_alive():
                log.warning("worker pid %s did not stop in time: killed", p.pid)
                p.kill()
                p.join(5.0)
        for w in self._workers:
            if w.conn is not None:
                w.conn.close()
                w.conn = None
        log.info("all workers stopped")


def serve_workers(spec: WorkerSpec, workers: int | Literal["auto"]) -> int:
    """Serve ``spec`` with ``workers`` processes until SIGTERM/SIGINT (the library's ``--workers``)."""
    plan = plan_workers(workers, available_cores(), spec.options.memory_budget)
    return Supervisor(spec, plan).run()
