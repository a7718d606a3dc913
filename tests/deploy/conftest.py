"""A small repository, measured once, for the deploy tests."""

from __future__ import annotations

from pathlib import Path

import pytest

from leanserve.deploy import Measured, measure_repository
from tests.fixtures.onnx_models import write_mlp

EXPERIMENTS = """
[experiments.mlp-canary]
mode = "canary"
arms = [{model = "mlp", version = 1}, {model = "mlp", version = 2}]
steps = [5, 25, 100]
"""


@pytest.fixture(scope="module")
def repository(tmp_path_factory: pytest.TempPathFactory) -> Path:
    repo = tmp_path_factory.mktemp("deploy") / "models"
    write_mlp(repo / "mlp" / "1" / "model.onnx", seed=1)
    write_mlp(repo / "mlp" / "2" / "model.onnx", seed=2)
    (repo / "mlp" / "model.toml").write_text('version_policy = "all"\n')
    (repo / "experiments.toml").write_text(EXPERIMENTS)
    return repo


@pytest.fixture(scope="module")
def measured(repository: Path) -> Measured:
    return measure_repository(repository)
