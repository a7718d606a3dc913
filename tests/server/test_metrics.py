"""The Prometheus exposition read by a real parser: every declared family, with values that follow the traffic."""

from __future__ import annotations

import asyncio
from pathlib import Path

import orjson
import pytest
from prometheus_client.parser import text_string_to_metric_families

from leanserve.errors import LeanserveError
from leanserve.protocol import Limits
from leanserve.registry import ModelRegistry, RegistryOptions
from leanserve.router import InferBody, RequestContext, Router
from leanserve.server.metrics import metrics_registry, render_metrics
from tests.fixtures.onnx_models import write_marked_model

MIB = 1 << 20
GOOD = orjson.dumps({"inputs": [{"name": "x", "shape": [1, 4], "datatype": "FP32", "data": [1, 2, 3, 4]}]})


def samples(router: Router) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    body, content_type = render_metrics(metrics_registry(router.registry, router))
    assert content_type.startswith(b"text/plain")
    found = {}
    for family in text_string_to_metric_families(body.decode()):
        for s in family.samples:
            found[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return found


@pytest.fixture
async def router(tmp_path: Path) -> Router:
    for i, name in enumerate("ab"):
        write_marked_model(tmp_path / name / "1" / "model.onnx", float(i), weight_mib=0.05)
        (tmp_path / name / "model.toml").write_text('load = "on_demand"\nmemory = "10MiB"\n')
    registry = ModelRegistry(tmp_path, RegistryOptions(memory_budget=15 * MIB))
    await registry.load_all()
    yield Router(registry, Limits())  # type: ignore[misc]
    await registry.close()


async def test_counters_follow_requests_loads_and_evictions(router: Router) -> None:
    ctx = RequestContext("t")
    await router.infer_async(ctx, "a", None, InferBody(GOOD))
    await router.infer_async(ctx, "b", None, InferBody(GOOD))  # evicts a
    with pytest.raises(LeanserveError):
        await router.infer_async(ctx, "b", None, InferBody(b"{"))
    with pytest.raises(LeanserveError):
        await router.infer_async(ctx, "ghost", None, InferBody(GOOD))
    await asyncio.sleep(0)
    found = samples(router)

    def m(name: str, model: str | None = None, **labels: str) -> float:
        if model is not None:
            labels |= {"model": model, "version": "1"}
        return found[(name, tuple(sorted(labels.items())))]

    assert m("leanserve_requests_total", "b", outcome="success", protocol="http") == 1
    assert m("leanserve_requests_total", "b", outcome="client_error", protocol="http") == 1
    assert m("leanserve_responses_total", "b", code="200") == 1
    assert m("leanserve_responses_total", "b", code="400") == 1
    assert ("leanserve_responses_total", (("code", "404"), ("model", "b"), ("version", "1"))) not in found
    assert m("leanserve_model_loads_total", "a") == 1
    assert m("leanserve_model_unloads_total", "a", reason="evicted") == 1
    assert m("leanserve_model_resident", "a") == 0 and m("leanserve_model_resident", "b") == 1
    assert m("leanserve_model_memory_bytes", "a") == 10 * MIB  # kept after the unload
    assert m("leanserve_memory_budget_bytes") == 15 * MIB
    assert m("leanserve_memory_used_bytes") == 10 * MIB
    assert m("leanserve_memory_baseline_bytes") > 0
    assert m("leanserve_evictions_total") == 1
    assert m("leanserve_unrouted_requests_total", status="404") == 1
    assert m("leanserve_request_duration_seconds_count", "b") == 2
    assert m("leanserve_batch_size_count", "b") == 1
    assert m("leanserve_model_memory_not_returned_bytes", "a") >= 0
