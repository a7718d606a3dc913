"""``leanserve serve ./models --ray``: start (or join) Ray, run the application, stop on a signal."""

from __future__ import annotations

import logging
import os
import signal
import threading
from pathlib import Path

import ray
from ray import serve

from .app import RayOptions, build_application

log = logging.getLogger("leanserve.ray")

APP_NAME = "leanserve"


def serve_on_ray(
    repository: Path,
    host: str = "127.0.0.1",
    port: int = 8000,
    address: str | None = None,
    options: RayOptions | None = None,
    num_cpus: int | None = None,
) -> None:
    """Serve ``repository`` on Ray Serve until SIGINT/SIGTERM.

    ``address`` None starts a Ray instance for this process (stopped at the end); ``"auto"`` or
    ``ray://...`` joins a running cluster (only this application is deleted at the end).
    """
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    joined = address is not None
    if not ray.is_initialized():
        ray.init(address=address, num_cpus=None if joined else num_cpus, include_dashboard=False)
    stop = threading.Event()
    previous = {sig: signal.signal(sig, lambda *_: stop.set()) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        serve.start(http_options={"host": host, "port": port})
        serve.run(build_application(repository, options), name=APP_NAME, route_prefix="/", blocking=False)
        log.info("serving %s on Ray Serve at http://%s:%d", repository, host, port)
        stop.wait()
        log.info("shutting down: Ray Serve drains in-flight requests")
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        try:
            serve.delete(APP_NAME)
            if not joined:
                serve.shutdown()  # type: ignore[no-untyped-call]
        finally:
            if not joined:
                ray.shutdown()
