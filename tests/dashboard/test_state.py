"""The dashboard's state document: every model with its versions' states and reasons, memory, figures, series."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import orjson
import pytest

from leanserve.dashboard import Sampler, dashboard_state
from leanserve.dashboard.state import batch_size_labels
from leanserve.registry import ModelRegistry, RegistryOptions
from leanserve.stats import BATCH_SIZE_BUCKETS
from tests.fixtures.onnx_models import write_marked_model

MIB = 1 << 20


@pytest.fixture
async def registry(tmp_path: Path) -> AsyncIterator[ModelRegistry]:
    write_marked_model(tmp_path / "ready" / "1" / "model.onnx", 1.0, weight_mib=0.05)
    write_marked_model(tmp_path / "lazy" / "1" / "model.onnx", 2.0, weight_mib=0.05)
    (tmp_path / "lazy" / "model.toml").write_text('load = "on_demand"\n')
    (tmp_path / "broken" / "1").mkdir(parents=True)
    (tmp_path / "broken" / "1" / "model.onnx").write_bytes(b"not onnx")
    registry = ModelRegistry(tmp_path, RegistryOptions(memory_budget=64 * MIB))
    await registry.load_all()
    yield registry
    await registry.close()


def test_batch_size_labels_follow_the_buckets() -> None:
    labels = batch_size_labels()
    assert labels[:4] == ["1", "2", "3-4", "5-8"] and labels[-1] == ">256"
    assert len(labels) == len(BATCH_SIZE_BUCKETS) + 1


async def test_states_reasons_memory_and_figures(registry: ModelRegistry) -> None:
    sampler = Sampler(registry, every_seconds=1.0)
    stats = registry.describe("ready", None).stats
    sampler.sample(now=1000.0)
    for _ in range(9):
        stats.record_request("success", 0.001)
    stats.record_failure(400, 0.001)
    stats.record_batch(3, 0.002)
    sampler.sample(now=1002.0)

    doc = dashboard_state(registry, sampler, lambda m: {"html": f"/r/{m}"} if m == "ready" else {}, {404: 2})
    orjson.dumps(doc)  # what the endpoint sends
    models = {m["name"]: m for m in doc["models"]}
    assert [v["state"] for v in models["ready"]["versions"]] == ["ready"]
    assert models["lazy"]["versions"][0]["state"] == "unloaded"
    assert "on demand" in models["lazy"]["versions"][0]["reason"]
    broken = models["broken"]["versions"][0]
    assert broken["state"] == "failed" and broken["reason"]
    assert doc["memory"]["budget_bytes"] == 64 * MIB and doc["memory"]["used_bytes"] > 0
    ready = models["ready"]
    assert ready["recent"]["rps"] == pytest.approx(5.0) and ready["recent"]["error_rate"] == pytest.approx(0.1)
    assert ready["totals"]["codes"] == {"200": 9, "400": 1} and ready["totals"]["errors"] == 1
    assert {b["rows"]: b["count"] for b in ready["batch_sizes"]}["3-4"] == 1
    assert ready["reports"] == {"html": "/r/ready"} and models["lazy"]["reports"] == {}
    assert doc["series"]["t"] == [1002.0]
    assert doc["series"]["models"]["ready"]["rps"] == [5.0]
    assert doc["series"]["models"]["lazy"]["p99_ms"] == [None]
    assert doc["unrouted"] == {"404": 2}
    assert doc["experiments"] == []  # the server fills in its experiments; none here
