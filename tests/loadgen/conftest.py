"""A real leanserve server for the load generator: the MLP in two versions and a split alias over them."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.fixtures.onnx_models import write_mlp
from tests.server.conftest import RunningServer

EXPERIMENTS = """
[experiments.ab]
mode = "split"
arms = [{model = "mlp", version = 1}, {model = "mlp", version = 2}]
"""


@pytest.fixture(scope="package")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    root: Path = tmp_path_factory.mktemp("bench-repo")
    write_mlp(root / "mlp" / "1" / "model.onnx", in_dim=4, out_dim=3, seed=1)
    write_mlp(root / "mlp" / "2" / "model.onnx", in_dim=4, out_dim=3, seed=2)
    (root / "mlp" / "model.toml").write_text('version_policy = "all"\nmax_batch_size = 8\n')
    (root / "experiments.toml").write_text(EXPERIMENTS)
    running = RunningServer(root).start()
    yield running
    running.stop()
