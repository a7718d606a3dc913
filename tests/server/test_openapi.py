"""The protocol's OpenAPI document, and schemathesis fuzzing a live server from it: no 500, ever."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, settings

from leanserve.protocol import Limits
from leanserve.server.openapi import openapi_document

from .conftest import RunningServer

DOCUMENT = openapi_document()
schema = schemathesis.openapi.from_dict(DOCUMENT)


@pytest.fixture(scope="module")
def fuzzed(repository: Path) -> Iterator[RunningServer]:
    running = RunningServer(repository, Limits(max_body_bytes=1 << 20, max_tensor_elements=1 << 16)).start()
    yield running
    running.stop()


def test_the_document_is_served_and_names_the_protocol_routes(fuzzed: RunningServer) -> None:
    r = httpx.get(f"{fuzzed.url}/v2/openapi.json")
    assert r.status_code == 200
    doc = r.json()
    assert doc == DOCUMENT
    assert doc["openapi"].startswith("3.")
    for path in ("/v2/health/live", "/v2/health/ready", "/v2", "/v2/models/{model_name}/infer"):
        assert path in doc["paths"]
    assert "inference_request" in doc["components"]["schemas"]


@pytest.mark.slow
@schema.parametrize()
@settings(max_examples=30, deadline=None, suppress_health_check=list(HealthCheck))
def test_fuzzed_requests_get_a_documented_answer_and_never_a_500(
    case: schemathesis.Case, fuzzed: RunningServer
) -> None:
    response = case.call(base_url=fuzzed.url, timeout=30)
    assert response.status_code != 500, f"{case.method} {case.formatted_path}: {response.text[:500]}"
    operation = DOCUMENT["paths"][case.path].get(case.method.lower())
    if operation is None:  # schemathesis also tries the methods a route does not have
        assert response.status_code in (404, 405), f"{case.method} {case.formatted_path}: {response.status_code}"
        return
    documented = operation["responses"]
    assert str(response.status_code) in documented, (
        f"{case.method} {case.formatted_path} answered {response.status_code}, not documented: {response.text[:300]}"
    )
    if response.status_code >= 400 and response.content:
        assert "error" in response.json()
