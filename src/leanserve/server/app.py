"""The server's lifecycle: listen, load the repository, serve, and shut down gracefully."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import signal
import socket
from pathlib import Path
from typing import TYPE_CHECKING, Literal

from ..protocol import Limits
from ..registry import ModelRegistry, RegistryOptions
from ..router import Router
from ..runtimes.threads import available_cores
from .asgi import MetricsSource, build_app
from .auth import Tokens
from .dashboard import Dashboard
from .experiments import ExperimentEndpoints, ExperimentOptions, Experiments
from .handlers import Handlers
from .http import SHUTDOWN_LINGER_SECONDS, ConnectionTracker, HttpProtocol
from .idle_poll import IdlePoll, idle_poll_seconds_for
from .observability import Observability, ObservabilityOptions
from .timeouts import TimeoutSweeper

if TYPE_CHECKING:
    from .grpc import GrpcFrontEnd

log = logging.getLogger("leanserve.server")


class Server:
    """A leanserve server for one model repository; usable from Python as from the CLI."""

    def __init__(
        self,
        repository: Path,
        host: str = "127.0.0.1",
        port: int = 8000,
        limits: Limits | None = None,
        shutdown_grace_seconds: float = 30.0,
        *,
        options: RegistryOptions | None = None,
        tokens: Tokens | None = None,
        poll_seconds: float | None = None,
        observability: ObservabilityOptions | None = None,
        grpc_port: int | None = None,
        experiments: ExperimentOptions | None = None,
        reuse_port: bool = False,
        metrics_source: MetricsSource | None = None,
        idle_poll_seconds: float | None = None,
    ) -> None:
        self.repository = Path(repository)
        self.host = host
        self.port = port
        self.grpc_port = grpc_port  # None: no gRPC front end
        self.limits = limits or Limits()
        self.shutdown_grace_seconds = shutdown_grace_seconds
        self.poll_seconds = poll_seconds  # None: no polling; the control API still reloads
        # SO_REUSEPORT: several worker processes listen on one port and the kernel spreads
        # connections between them (``serve --workers N``, :mod:`.workers`).
        self.reuse_port = reuse_port
        # After each answer the loop polls this long before it sleeps (see idle_poll.py); None: 50 us
        # where the server has two cores or more and no sibling workers, else 0 (off).
        self.idle_poll_seconds = idle_poll_seconds_for(idle_poll_seconds, available_cores(), reuse_port)
        self.registry = ModelRegistry(self.repository, options)
        self.router = Router(self.registry, self.limits)
        self.handlers = Handlers(self.registry, self.router, tokens)
        self.observability = Observability(self.registry, self.router, observability)
        self.experiments = Experiments(self.registry, self.router, self.observability.state_dir, experiments)
        tokens = self.handlers.tokens
        self.app = build_app(
            self.handlers,
            dashboard=Dashboard(self.registry, self.router, self.observability, tokens, self.experiments),
            experiments=ExperimentEndpoints(self.experiments, tokens),
            metrics_source=metrics_source,
        )
        self._tracker = ConnectionTracker()
        self._sweeper = TimeoutSweeper(self._tracker.connections, self.limits)
        self._server: asyncio.Server | None = None
        self._grpc: GrpcFrontEnd | None = None
        self._watch: asyncio.Task[None] | None = None
        self._stopped = asyncio.Event()

    @property
    def bound_port(self) -> int:
        """The port actually listened on (differs from ``port`` when that was 0)."""
        assert self._server is not None, "start() first"
        sock: socket.socket = self._server.sockets[0]
        port: int = sock.getsockname()[1]
        return port

    @property
    def bound_grpc_port(self) -> int:
        """The port gRPC actually listens on (differs from ``grpc_port`` when that was 0)."""
        assert self._grpc is not None, "start() with a grpc_port first"
        return self._grpc.port

    async def start(self) -> None:
        """Listen at once (liveness answers while models load), load the repository, start the experiments.

        A mistake in experiments.toml stops the server: before it listens when the file cannot be
        read, after the models loaded when an experiment names a model or version that is not there.
        """
        loop = asyncio.get_running_loop()
        self.experiments.read()
        self.observability.start()  # before the first request: every failure is logged
        idle_poll = IdlePoll(loop, self.idle_poll_seconds) if self.idle_poll_seconds > 0 else None
        try:
            self._server = await loop.create_server(
                lambda: HttpProtocol(self.handlers, self.app, self.limits, self._tracker, idle_poll),
                self.host,
                self.port,
                reuse_address=True,
                reuse_port=self.reuse_port or None,
                backlog=2048,
            )
        except BaseException:
            await self.observability.close()
            raise
        log.info("listening on http://%s:%d", self.host, self.bound_port)
        self._sweeper.start()
        if self.grpc_port is not None:
            # Imported here: an HTTP-only server does not pay for h2, grpcio and the protocol's messages.
            from .grpc import GrpcFrontEnd

            self._grpc = GrpcFrontEnd(self.handlers, self.limits)
            try:
                await self._grpc.start(self.host, self.grpc_port, reuse_port=self.reuse_port)
            except BaseException:
                self._grpc = None
                self._server.close()
                self._server = None
                await self.observability.close()
                raise
        await self.registry.load_all()
        try:
            self.experiments.open()  # no await since the load: ready means the aliases answer too
        except BaseException:
            await self.stop()
            raise
        settle_collector()
        ready = sum(1 for m in self.registry.snapshot() for v in m.versions if v.ready)
        log.info("repository %s loaded: %d version(s) ready", self.repository, ready)
        if self.poll_seconds:
            self._watch = loop.create_task(self.registry.watch(self.poll_seconds))

    async def stop(self) -> None:
        """Stop accepting, let in-flight requests finish (up to the grace period), release models."""
        if self._server is None:
            return
        self.handlers.shutting_down = True
        if self._watch is not None:
            self._watch.cancel()
            self._watch = None
        self._server.close()
        for connection in list(self._tracker.connections):
            connection.close()
        loop = asyncio.get_running_loop()
        # gRPC refuses new calls at once and drains its in-flight ones while HTTP drains its own;
        # the models are released only when both are done (or the grace period is over).
        grpc_stopped = loop.create_task(self._grpc.stop(self.shutdown_grace_seconds)) if self._grpc else None
        deadline = loop.time() + self.shutdown_grace_seconds
        # Idle kept-alive connections linger (see http.SHUTDOWN_LINGER_SECONDS); without any, no wait.
        linger = loop.time() + (
            min(SHUTDOWN_LINGER_SECONDS, self.shutdown_grace_seconds) if self._tracker.connections else 0
        )
        while (self._tracker.busy or loop.time() < linger) and loop.time() < deadline:
            await asyncio.sleep(0.01)
        self._sweeper.stop()  # after the grace period: it kept cutting off slow clients meanwhile
        if grpc_stopped is not None:
            await grpc_stopped
            self._grpc = None
        await self.registry.close()
        await self.experiments.close()  # after the last answers: their outcomes are written
        await self.observability.close()  # after the last answers: their failures are written
        with contextlib.suppress(Exception):
            await asyncio.wait_for(self._server.wait_closed(), timeout=1.0)
        self._server = None
        self._stopped.set()

    async def serve_until_signal(self) -> None:
        """Run until SIGINT or SIGTERM, then shut down gracefully."""
        loop = asyncio.get_running_loop()
        stop = asyncio.Event()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        await self.start()
        await stop.wait()
        log.info("shutting down: finishing in-flight requests")
        await self.stop()


def settle_collector() -> None:
    """Set the garbage collector for serving, once start-up is done."""
    # What start-up made lives as long as the server: keep it out of every later collection,
    # whose full passes would otherwise walk it while requests wait (gc.freeze, Python 3.7+).
    gc.collect()
    gc.freeze()
    # A request makes a few dozen short-lived containers, freed by reference counting; at the
    # default threshold (700) the young generation was collected every ~20 requests. Rarer
    # collections of it cost less in all (what is scanned is what is still alive): measured in
    # process at concurrency 32 (benchmarks/hotpath.py), about 34.5 -> 31.5 us of CPU a request.
    # Cyclic garbage waits a little longer; the older generations keep their thresholds.
    gc.set_threshold(20_000, *gc.get_threshold()[1:])


def run_event_loop(main: object) -> None:
    """Run a coroutine on uvloop when it is installed (it halves the loop's overhead), else asyncio."""
    try:
        import uvloop
    except ImportError:
        asyncio.run(main)  # type: ignore[arg-type]
    else:
        uvloop.run(main)  # type: ignore[arg-type]


def serve(
    repository: Path,
    host: str = "127.0.0.1",
    port: int = 8000,
    limits: Limits | None = None,
    *,
    options: RegistryOptions | None = None,
    tokens: Tokens | None = None,
    poll_seconds: float | None = None,
    observability: ObservabilityOptions | None = None,
    grpc_port: int | None = None,
    experiments: ExperimentOptions | None = None,
    workers: int | Literal["auto"] = 1,
    log_setup: tuple[str, str] | None = None,
    shutdown_grace_seconds: float = 30.0,
    idle_poll_seconds: float | None = None,
) -> None:
    """Serve ``repository`` until SIGINT/SIGTERM; returns after a graceful shutdown.

    ``grpc_port`` also serves the protocol over gRPC there (off when None). ``workers`` > 1 (or
    "auto": one per core) serves from that many processes on one port (see :mod:`.workers`);
    ``log_setup`` is (level, format) for their logging. On a signal the server stops accepting and
    answers what it accepted for at most ``shutdown_grace_seconds``. ``idle_poll_seconds``: how long
    the event loop polls after an answer before it sleeps (see :mod:`.idle_poll`; None: its default).
    """
    if workers != 1:
        from .workers import WorkerSpec, serve_workers

        level, log_format = log_setup or (None, "text")
        spec = WorkerSpec(
            Path(repository),
            host,
            port,
            limits or Limits(),
            options or RegistryOptions(),
            tokens,
            poll_seconds,
            observability,
            grpc_port,
            experiments,
            level,
            log_format,
            shutdown_grace_seconds,
            idle_poll_seconds,
        )
        serve_workers(spec, workers)
        return
    server = Server(
        repository,
        host,
        port,
        limits,
        shutdown_grace_seconds,
        options=options,
        tokens=tokens,
        poll_seconds=poll_seconds,
        observability=observability,
        grpc_port=grpc_port,
        experiments=experiments,
        idle_poll_seconds=idle_poll_seconds,
    )
    run_event_loop(server.serve_until_signal())
