"""gRPC beside HTTP on the request path's shared parts: an experiment's unit read from gRPC metadata
as HTTP reads the header, and ``leanserve_requests_total`` labelled with the protocol."""

from __future__ import annotations

import time
from collections.abc import Iterator

import httpx
import numpy as np
import pytest
import tritonclient.grpc as grpcclient
from prometheus_client.parser import text_string_to_metric_families
from tritonclient.utils import InferenceServerException

from leanserve.server.experiments import ExperimentOptions
from tests.fixtures.experiments import write_repository
from tests.server.conftest import RunningServer

BODY = {"inputs": [{"name": "x", "shape": [1, 4], "datatype": "FP32", "data": [1, 2, 3, 4]}]}
EXPERIMENTS = """
[experiments.ab]
mode = "split"
arms = [{model = "m", version = 1}, {model = "m", version = 2}]

[experiments.mirror]
mode = "shadow"
arms = [{model = "m", version = 1}, {model = "m", version = 2}]
"""


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    root = write_repository(tmp_path_factory.mktemp("grpc-experiments"), EXPERIMENTS)
    running = RunningServer(root, grpc_port=0, experiments=ExperimentOptions(evaluate_seconds=0.1)).start()
    yield running
    running.stop()


@pytest.fixture
def client(server: RunningServer) -> grpcclient.InferenceServerClient:
    return grpcclient.InferenceServerClient(server.grpc_address)


def grpc_infer(
    client: grpcclient.InferenceServerClient, model: str, unit: str | None = None, version: str = ""
) -> grpcclient.InferResult:
    x = grpcclient.InferInput("x", [1, 4], "FP32")
    x.set_data_from_numpy(np.array([[1, 2, 3, 4]], np.float32))
    headers = {"x-leanserve-unit": unit} if unit is not None else None
    return client.infer(model, [x], model_version=version, headers=headers)


def grpc_arm(client: grpcclient.InferenceServerClient, alias: str, unit: str | None = None) -> tuple[str, float]:
    """(the arm named in the answer's parameters, the value it answered: 1.0 from m:1, 2.0 from m:2)."""
    result = grpc_infer(client, alias, unit).get_response()
    assert result.model_name == alias
    return result.parameters["leanserve_arm"].string_param, float(grpc_value(result))


def grpc_value(response: object) -> float:
    raw = response.raw_output_contents[0]  # type: ignore[attr-defined]
    return float(np.frombuffer(raw, np.float32)[0])


def http_arm(url: str, alias: str, unit: str) -> tuple[str, float]:
    r = httpx.post(f"{url}/v2/models/{alias}/infer", json=BODY, headers={"X-Leanserve-Unit": unit})
    r.raise_for_status()
    return r.headers["x-leanserve-arm"], float(r.json()["outputs"][0]["data"][0])


def test_one_unit_gets_one_arm_over_both_protocols(
    server: RunningServer, client: grpcclient.InferenceServerClient
) -> None:
    arms = set()
    for i in range(40):
        unit = f"user-{i}"
        over_http = http_arm(server.url, "ab", unit)
        assert grpc_arm(client, "ab", unit) == over_http, unit
        assert grpc_arm(client, "ab", unit) == over_http, unit  # and again: sticky
        assert over_http[1] == {"m:1": 1.0, "m:2": 2.0}[over_http[0]]  # the arm named is the arm that answered
        arms.add(over_http[0])
    assert arms == {"m:1", "m:2"}  # 40 units, 50/50: both arms (a miss has probability 2**-39)


def test_without_the_unit_metadata_grpc_requests_draw_their_arm(client: grpcclient.InferenceServerClient) -> None:
    """The metadata is what makes a unit sticky: without it the arm is random, as over HTTP."""
    assert {grpc_arm(client, "ab")[0] for _ in range(40)} == {"m:1", "m:2"}


def requests_total(url: str) -> dict[tuple[str, str, str, str], float]:
    """leanserve_requests_total by (model, version, outcome, protocol)."""
    text = httpx.get(f"{url}/metrics").text
    family = next(f for f in text_string_to_metric_families(text) if f.name == "leanserve_requests")
    return {
        (s.labels["model"], s.labels["version"], s.labels["outcome"], s.labels["protocol"]): s.value
        for s in family.samples
        if s.name == "leanserve_requests_total"
    }


def test_requests_total_says_which_protocol_each_request_came_over(
    server: RunningServer, client: grpcclient.InferenceServerClient
) -> None:
    before = requests_total(server.url)
    for _ in range(3):
        grpc_infer(client, "m", version="1")
    for _ in range(5):
        httpx.post(f"{server.url}/v2/models/m/versions/1/infer", json=BODY).raise_for_status()
    with pytest.raises(InferenceServerException) as missing:
        grpc_infer(client, "m", version="7")  # no such version: counted apart, as over HTTP
    assert missing.value.status() == "StatusCode.NOT_FOUND"
    bad = grpcclient.InferInput("y", [1, 4], "FP32")  # no input y: a client error over gRPC
    bad.set_data_from_numpy(np.ones((1, 4), np.float32))
    with pytest.raises(InferenceServerException) as invalid:
        client.infer("m", [bad], model_version="1")
    assert invalid.value.status() == "StatusCode.INVALID_ARGUMENT"
    after = requests_total(server.url)

    def delta(outcome: str, protocol: str) -> float:
        key = ("m", "1", outcome, protocol)
        return after.get(key, 0.0) - before.get(key, 0.0)

    assert delta("success", "grpc") == 3
    assert delta("success", "http") == 5
    assert delta("client_error", "grpc") == 1
    assert delta("client_error", "http") == 0


def test_an_alias_over_grpc_counts_grpc_for_the_arm_and_shadow_for_the_copy(
    server: RunningServer, client: grpcclient.InferenceServerClient
) -> None:
    before = requests_total(server.url)
    for i in range(4):
        assert grpc_arm(client, "mirror", f"s-{i}") == ("m:1", 1.0)  # the control answers

    def copies() -> float:
        now = requests_total(server.url)
        return now.get(("m", "2", "success", "shadow"), 0.0) - before.get(("m", "2", "success", "shadow"), 0.0)

    end = time.monotonic() + 30
    while copies() < 4 and time.monotonic() < end:  # copies run after the answers, when the loop is idle
        time.sleep(0.05)
    after = requests_total(server.url)
    assert after[("m", "1", "success", "grpc")] - before.get(("m", "1", "success", "grpc"), 0.0) == 4
    assert copies() == 4
    # Copies are not HTTP requests: m:2's HTTP count did not move.
    assert after[("m", "2", "success", "http")] == before.get(("m", "2", "success", "http"), 0.0)
