"""A real leanserve server on a free loopback port, running in a background thread."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from leanserve.protocol import Limits
from leanserve.server import Server
from tests.fixtures.onnx_models import write_mlp


class RunningServer:
    """Starts ``Server`` on its own event loop in a thread; ``url`` (and ``grpc_address``) is where it listens."""

    def __init__(self, repository: Path, limits: Limits | None = None, **options: Any) -> None:
        self.server = Server(repository, host="127.0.0.1", port=0, limits=limits, **options)
        self._loop = asyncio.new_event_loop()
        self._started = threading.Event()
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name="leanserve-test-server", daemon=True)

    def _run(self) -> None:
        asyncio.set_event_loop(self._loop)
        try:
            self._loop.run_until_complete(self.server.start())
        except BaseException as e:  # surfaced to the test by start()
            self._error = e
            self._started.set()
            return
        self._started.set()
        self._loop.run_forever()

    def start(self) -> RunningServer:
        self._thread.start()
        self._started.wait(timeout=60)
        if self._error is not None:
            raise self._error
        self.port = self.server.bound_port
        self.url = f"http://127.0.0.1:{self.port}"
        if self.server.grpc_port is not None:
            self.grpc_address = f"127.0.0.1:{self.server.bound_grpc_port}"  # host:port, as gRPC clients take it
        return self

    def stop(self) -> None:
        future = asyncio.run_coroutine_threadsafe(self.server.stop(), self._loop)
        future.result(timeout=60)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=10)
        self._loop.close()


@pytest.fixture(scope="module")
def repository(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A repository with a batching MLP (two versions) and a broken model beside it."""
    root = tmp_path_factory.mktemp("repo")
    write_mlp(root / "mlp" / "1" / "model.onnx", in_dim=4, out_dim=3, seed=1)
    write_mlp(root / "mlp" / "2" / "model.onnx", in_dim=4, out_dim=3, seed=2)
    (root / "mlp" / "model.toml").write_text('version_policy = "all"\nmax_batch_size = 8\n')
    (root / "broken" / "1").mkdir(parents=True)
    (root / "broken" / "1" / "model.onnx").write_bytes(b"not an onnx file")
    return root


@pytest.fixture(scope="module")
def server(repository: Path) -> Iterator[RunningServer]:
    running = RunningServer(repository, Limits(max_body_bytes=1 << 20)).start()
    yield running
    running.stop()
