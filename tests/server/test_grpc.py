"""The protocol over gRPC, through tritonclient.grpc (a client nobody here wrote) against a real server
that serves HTTP beside it: what gRPC answers is what HTTP answers."""

from __future__ import annotations

import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from functools import partial
from pathlib import Path
from typing import Any

import grpc
import httpx
import numpy as np
import onnxruntime as ort
import pytest
import tritonclient.grpc as grpcclient
import tritonclient.http as httpclient
from hypothesis import HealthCheck, given, settings
from tritonclient.grpc import service_pb2, service_pb2_grpc
from tritonclient.utils import InferenceServerException

from leanserve.protocol import DATATYPES, Limits
from leanserve.server.auth import Tokens
from tests.fixtures.onnx_models import write_echo_models, write_lookup, write_mlp, write_slow_affine
from tests.fixtures.tensors import arrays, as_utf8
from tests.support import free_port, wait_until_ready

from .conftest import RunningServer

TOKEN = "s3cret-admin"
MAX_BATCH = 8
MAX_ELEMENTS = 100_000
BODY_LIMIT = 1 << 20
SERVE = [sys.executable, "-m", "leanserve", "serve"]
# What each HTTP status reads as over gRPC (leanserve.server.grpc.status).
CODES = {
    400: "StatusCode.INVALID_ARGUMENT",
    401: "StatusCode.UNAUTHENTICATED",
    403: "StatusCode.PERMISSION_DENIED",
    404: "StatusCode.NOT_FOUND",
    413: "StatusCode.RESOURCE_EXHAUSTED",
    500: "StatusCode.INTERNAL",
    503: "StatusCode.UNAVAILABLE",
}
CONTENTS = {
    "BOOL": "bool_contents",
    "UINT8": "uint_contents",
    "UINT16": "uint_contents",
    "UINT32": "uint_contents",
    "UINT64": "uint64_contents",
    "INT8": "int_contents",
    "INT16": "int_contents",
    "INT32": "int_contents",
    "INT64": "int64_contents",
    "FP32": "fp32_contents",
    "FP64": "fp64_contents",
    "BYTES": "bytes_contents",
}


@pytest.fixture(scope="module")
def repository(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = write_echo_models(tmp_path_factory.mktemp("grpc-repo"))
    write_mlp(root / "mlp" / "1" / "model.onnx", seed=1)
    write_mlp(root / "mlp" / "2" / "model.onnx", seed=2)
    (root / "mlp" / "model.toml").write_text(f'version_policy = "all"\nmax_batch_size = {MAX_BATCH}\n')
    # ~300 ms a run whatever the rows: requests that arrive meanwhile queue up and share the next batch.
    write_slow_affine(root / "slow" / "1" / "model.onnx", side=2048)
    (root / "slow" / "model.toml").write_text(
        f"max_batch_size = {MAX_BATCH}\n"
        "[dynamic_batching]\nadaptive_batch_size = false\n"
        "[runtime]\nintra_op_threads = 1\nallow_spinning = false\n"
    )
    write_lookup(root / "lookup" / "1" / "model.onnx")
    (root / "broken" / "1").mkdir(parents=True)
    (root / "broken" / "1" / "model.onnx").write_bytes(b"not an onnx file")
    return root


@pytest.fixture(scope="module")
def server(repository: Path) -> Iterator[RunningServer]:
    limits = Limits(max_body_bytes=BODY_LIMIT, max_tensor_elements=MAX_ELEMENTS)
    running = RunningServer(repository, limits, grpc_port=0, tokens=Tokens(admin=TOKEN)).start()
    yield running
    running.stop()


@pytest.fixture
def client(server: RunningServer) -> grpcclient.InferenceServerClient:
    return grpcclient.InferenceServerClient(server.grpc_address)


@pytest.fixture
def http(server: RunningServer) -> httpclient.InferenceServerClient:
    return httpclient.InferenceServerClient(f"127.0.0.1:{server.port}")


def grpc_input(name: str, x: np.ndarray, datatype: str) -> grpcclient.InferInput:
    inp = grpcclient.InferInput(name, list(x.shape), datatype)
    inp.set_data_from_numpy(x)
    return inp


def http_input(name: str, x: np.ndarray, datatype: str) -> httpclient.InferInput:
    inp = httpclient.InferInput(name, list(x.shape), datatype)
    inp.set_data_from_numpy(x, binary_data=True)
    return inp


def refusal(call: Callable[[], object]) -> tuple[str, str]:
    """(status, message) of the InferenceServerException that ``call`` raises."""
    with pytest.raises(InferenceServerException) as info:
        call()
    return str(info.value.status()), str(info.value.message())


def reference(repository: Path, model: str, version: int, feed: dict[str, np.ndarray]) -> np.ndarray:
    session = ort.InferenceSession(str(repository / model / str(version) / "model.onnx"))
    out: np.ndarray = session.run(None, feed)[0]
    return out


# ---- health, metadata, configuration: what HTTP answers ------------------------------------


def test_health_and_server_metadata(
    client: grpcclient.InferenceServerClient, http: httpclient.InferenceServerClient
) -> None:
    assert client.is_server_live() and client.is_server_ready()
    assert client.is_model_ready("mlp") and client.is_model_ready("mlp", "1")
    assert not client.is_model_ready("broken")
    assert not client.is_model_ready("nope")  # as Triton answers, and as tritonclient.http reads a 404
    meta = client.get_server_metadata(as_json=True)
    assert meta == {k: v for k, v in http.get_server_metadata().items() if k in meta}
    assert set(meta) == {"name", "version", "extensions"}


@pytest.mark.parametrize(("model", "version"), [("mlp", ""), ("mlp", "1"), ("slow", ""), ("echo_bytes", "")])
def test_model_metadata_is_what_http_answers(
    client: grpcclient.InferenceServerClient, http: httpclient.InferenceServerClient, model: str, version: str
) -> None:
    got = client.get_model_metadata(model, version)
    want = http.get_model_metadata(model, version)
    assert (got.name, list(got.versions), got.platform) == (want["name"], want["versions"], want["platform"])
    for kind in ("inputs", "outputs"):
        tensors = [{"name": t.name, "datatype": t.datatype, "shape": list(t.shape)} for t in getattr(got, kind)]
        assert tensors == want[kind]


@pytest.mark.parametrize(("model", "version"), [("mlp", ""), ("mlp", "2"), ("slow", ""), ("echo_bytes", "")])
def test_model_config_is_what_http_answers_in_tritons_message(
    client: grpcclient.InferenceServerClient, http: httpclient.InferenceServerClient, model: str, version: str
) -> None:
    got = client.get_model_config(model, version).config
    want = http.get_model_config(model, version)
    assert (got.name, got.platform, got.backend) == (want["name"], want["platform"], want["backend"])
    assert got.max_batch_size == want["max_batch_size"]
    assert got.default_model_filename == want["default_model_filename"]
    assert got.version_policy.WhichOneof("policy_choice") == next(iter(want["version_policy"]))
    for kind in ("input", "output"):
        tensors = [
            {"name": t.name, "data_type": grpcclient.model_config_pb2.DataType.Name(t.data_type), "dims": list(t.dims)}
            for t in getattr(got, kind)
        ]
        assert tensors == want[kind]
    batching = want["dynamic_batching"]
    assert got.dynamic_batching.max_queue_delay_microseconds == batching["max_queue_delay_microseconds"]
    assert list(got.dynamic_batching.preferred_batch_size) == batching["preferred_batch_size"]
    assert got.dynamic_batching.default_queue_policy.max_queue_size == batching["max_queue_size"]
    kind = grpcclient.model_config_pb2.ModelInstanceGroup.Kind.Name
    assert [(g.count, kind(g.kind)) for g in got.instance_group] == [(1, "KIND_CPU")]
    # leanserve's own keys, which Triton's message lacks, travel as parameters.
    parameters = {k: v.string_value for k, v in got.parameters.items()}
    assert parameters["load"] == want["load"] and int(parameters["memory_bytes"]) == want["memory_bytes"]
    assert int(parameters["version"]) == want["version"]
    assert parameters["providers"] == '["CPUExecutionProvider"]'


def test_statistics_are_what_http_answers(
    client: grpcclient.InferenceServerClient, http: httpclient.InferenceServerClient
) -> None:
    client.infer("mlp", [grpc_input("x", np.ones((3, 4), np.float32), "FP32")], model_version="1")
    got = client.get_inference_statistics("mlp", "1").model_stats
    want = http.get_inference_statistics("mlp", "1")["model_stats"]
    assert len(got) == len(want) == 1
    assert (got[0].name, got[0].version) == (want[0]["name"], want[0]["version"])
    assert got[0].inference_count == want[0]["inference_count"] >= 3
    assert got[0].execution_count == want[0]["execution_count"]
    assert got[0].inference_stats.success.count == want[0]["inference_stats"]["success"]["count"]
    assert [(b.batch_size, b.compute_infer.count) for b in got[0].batch_stats] == [
        (b["batch_size"], b["compute_infer"]["count"]) for b in want[0]["batch_stats"]
    ]
    assert got[0].memory_usage[0].byte_size == want[0]["memory_usage"][0]["byte_size"] > 0
    every = client.get_inference_statistics().model_stats
    assert {(s.name, s.version) for s in every} >= {("mlp", "1"), ("mlp", "2"), ("slow", "1")}


# ---- inference -------------------------------------------------------------------------------


def test_infer_selects_outputs_and_echoes_the_id(client: grpcclient.InferenceServerClient, repository: Path) -> None:
    x = np.random.default_rng(3).normal(size=(5, 4)).astype(np.float32)
    result = client.infer(
        "mlp",
        [grpc_input("x", x, "FP32")],
        model_version="1",
        outputs=[grpcclient.InferRequestedOutput("y")],
        request_id="g-1",
    )
    np.testing.assert_allclose(result.as_numpy("y"), reference(repository, "mlp", 1, {"x": x}), rtol=1e-5)
    response = result.get_response()
    assert (response.id, response.model_name, response.model_version) == ("g-1", "mlp", "1")
    assert len(response.raw_output_contents) == 1  # outputs travel raw, as Triton sends them
    # Unversioned requests reach the default (highest) version.
    np.testing.assert_allclose(
        client.infer("mlp", [grpc_input("x", x, "FP32")]).as_numpy("y"),
        reference(repository, "mlp", 2, {"x": x}),
        rtol=1e-5,
    )


@pytest.mark.parametrize("datatype", DATATYPES)
def test_every_datatype_round_trips_in_raw_contents(server: RunningServer, datatype: str) -> None:
    client = grpcclient.InferenceServerClient(server.grpc_address)

    @settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
    @given(arrays(datatype))
    def check(x: np.ndarray) -> None:
        if datatype == "BYTES":
            x = as_utf8(x)
        got = client.infer(f"echo_{datatype.lower()}", [grpc_input("in", x, datatype)]).as_numpy("out")
        assert got is not None and got.shape == x.shape
        if datatype == "BYTES":
            assert list(got.ravel()) == list(x.ravel())
        else:
            assert got.dtype == x.dtype
            np.testing.assert_array_equal(got, x)

    check()


@pytest.mark.parametrize("datatype", [d for d in DATATYPES if d != "FP16"])  # FP16 has no typed field
def test_every_datatype_round_trips_in_typed_contents(server: RunningServer, datatype: str) -> None:
    with grpc.insecure_channel(server.grpc_address) as channel:
        stub = service_pb2_grpc.GRPCInferenceServiceStub(channel)

        @settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
        @given(arrays(datatype))
        def check(x: np.ndarray) -> None:
            if datatype == "BYTES":
                x = as_utf8(x)
            request = service_pb2.ModelInferRequest(model_name=f"echo_{datatype.lower()}")
            tensor = request.inputs.add(name="in", datatype=datatype, shape=x.shape)
            getattr(tensor.contents, CONTENTS[datatype]).extend(x.ravel().tolist())
            got = grpcclient.InferResult(stub.ModelInfer(request)).as_numpy("out")
            assert got is not None and got.shape == x.shape
            if datatype == "BYTES":
                assert list(got.ravel()) == list(x.ravel())
            else:
                assert got.dtype == x.dtype
                np.testing.assert_array_equal(got, x)

        check()


def test_grpc_and_http_requests_share_one_batch(
    server: RunningServer, client: grpcclient.InferenceServerClient
) -> None:
    """A request holds the slow model; one HTTP request of 2 rows and one gRPC request of 3 rows arrive
    while it runs. The next run is a batch of 5 rows: only the two of them together make 5."""
    rng = np.random.default_rng(5)
    blocker, over_http, over_grpc = (rng.normal(size=(n, 4)).astype(np.float32) for n in (1, 2, 3))

    def post(x: np.ndarray) -> np.ndarray:
        # httpx, not tritonclient.http: its gevent-based client must not be shared between threads.
        body = {"inputs": [{"name": "x", "datatype": "FP32", "shape": list(x.shape), "data": x.ravel().tolist()}]}
        r = httpx.post(f"{server.url}/v2/models/slow/infer", json=body, timeout=30)
        assert r.status_code == 200, r.text
        (out,) = r.json()["outputs"]
        return np.array(out["data"], np.float32).reshape(out["shape"])

    def infer(x: np.ndarray) -> np.ndarray:
        y: np.ndarray = client.infer("slow", [grpc_input("x", x, "FP32")]).as_numpy("y")
        return y

    before = client.get_inference_statistics("slow", "1").model_stats[0]
    with ThreadPoolExecutor(3) as pool:
        first = pool.submit(post, blocker)
        time.sleep(0.1)  # the blocker runs (~300 ms); what follows queues behind it
        answers = [pool.submit(post, over_http), pool.submit(infer, over_grpc)]
        results = [first.result(timeout=30)] + [a.result(timeout=30) for a in answers]
    after = client.get_inference_statistics("slow", "1").model_stats[0]

    session = ort.InferenceSession(str(server.server.repository / "slow" / "1" / "model.onnx"))
    for x, y in zip((blocker, over_http, over_grpc), results, strict=True):
        np.testing.assert_allclose(y, session.run(None, {"x": x})[0], rtol=1e-5, atol=1e-6)
    runs_before = {b.batch_size: b.compute_infer.count for b in before.batch_stats}
    runs = {b.batch_size: b.compute_infer.count - runs_before.get(b.batch_size, 0) for b in after.batch_stats}
    assert {size: n for size, n in runs.items() if n} == {1: 1, 5: 1}, runs
    assert after.execution_count - before.execution_count == 2
    assert after.inference_count - before.inference_count == 6


# ---- errors: Triton's status codes, HTTP's messages -----------------------------------------


def lookup_index(i: int) -> np.ndarray:
    return np.array([[i]], np.int64)


ERROR_CASES: list[tuple[str, str, str, np.ndarray, str, str]] = [
    # (case, model, version, array, input name, datatype)
    ("unknown model", "nope", "", np.ones((1, 4), np.float32), "x", "FP32"),
    ("unknown version", "mlp", "9", np.ones((1, 4), np.float32), "x", "FP32"),
    ("wrong shape", "mlp", "", np.ones((1, 5), np.float32), "x", "FP32"),
    ("wrong datatype", "mlp", "", np.ones((1, 4), np.int64), "x", "INT64"),
    ("unknown input", "mlp", "", np.ones((1, 4), np.float32), "z", "FP32"),
    ("over max_batch_size", "mlp", "", np.ones((MAX_BATCH + 1, 4), np.float32), "x", "FP32"),
    ("model failed to load", "broken", "", np.ones((1, 4), np.float32), "x", "FP32"),
    ("engine fails at run time", "lookup", "", lookup_index(7), "i", "INT64"),
    ("too many elements", "echo_uint8", "", np.zeros((1, MAX_ELEMENTS + 1), np.uint8), "in", "UINT8"),
]


@pytest.mark.parametrize(
    ("model", "version", "x", "name", "datatype"), [c[1:] for c in ERROR_CASES], ids=[c[0] for c in ERROR_CASES]
)
def test_errors_carry_tritons_code_and_https_message(
    client: grpcclient.InferenceServerClient,
    http: httpclient.InferenceServerClient,
    model: str,
    version: str,
    x: np.ndarray,
    name: str,
    datatype: str,
) -> None:
    status, http_message = refusal(lambda: http.infer(model, [http_input(name, x, datatype)], model_version=version))
    code, message = refusal(lambda: client.infer(model, [grpc_input(name, x, datatype)], model_version=version))
    assert code == CODES[int(status)]
    assert message == http_message
    # ... and the server goes on serving.
    assert client.infer("mlp", [grpc_input("x", np.ones((1, 4), np.float32), "FP32")]).as_numpy("y") is not None


def test_a_message_over_the_body_limit_is_refused_by_grpc_itself(client: grpcclient.InferenceServerClient) -> None:
    x = np.zeros((1, BODY_LIMIT + 16), np.uint8)
    code, message = refusal(lambda: client.infer("echo_uint8", [grpc_input("in", x, "UINT8")]))
    assert code == "StatusCode.RESOURCE_EXHAUSTED"
    assert str(BODY_LIMIT) in message


def test_typed_contents_are_checked_like_json_data(server: RunningServer) -> None:
    def refused(datatype: str, shape: list[int], fill: Callable[[Any], None]) -> tuple[grpc.StatusCode, str]:
        request = service_pb2.ModelInferRequest(model_name=f"echo_{datatype.lower()}")
        fill(request.inputs.add(name="in", datatype=datatype, shape=shape).contents)
        with grpc.insecure_channel(server.grpc_address) as channel, pytest.raises(grpc.RpcError) as info:
            service_pb2_grpc.GRPCInferenceServiceStub(channel).ModelInfer(request)
        error: Any = info.value
        return error.code(), error.details()

    assert refused("INT8", [1, 2], lambda c: c.int_contents.extend([1, 300])) == (
        grpc.StatusCode.INVALID_ARGUMENT,
        "input 'in': 300 (element 1) is out of range for INT8 (-128 to 127)",
    )
    assert refused("FP32", [1, 3], lambda c: c.fp32_contents.extend([1.0, 2.0])) == (
        grpc.StatusCode.INVALID_ARGUMENT,
        "input 'in': shape [1, 3] needs 3 elements, got 2",
    )
    code, message = refused("FP32", [1, 1], lambda c: c.fp64_contents.append(1.0))
    assert code == grpc.StatusCode.INVALID_ARGUMENT and "belongs in contents.fp32_contents" in message
    code, message = refused("FP16", [1, 1], lambda c: c.fp32_contents.append(1.0))
    assert code == grpc.StatusCode.INVALID_ARGUMENT and "raw_input_contents" in message
    code, message = refused("UINT8", [1, MAX_ELEMENTS + 1], lambda c: c.uint_contents.extend([0] * (MAX_ELEMENTS + 1)))
    assert code == grpc.StatusCode.RESOURCE_EXHAUSTED and "exceed the limit" in message


def test_decode_failures_are_counted_against_the_version(client: grpcclient.InferenceServerClient) -> None:
    def failures() -> int:
        return int(client.get_inference_statistics("echo_fp32", "1").model_stats[0].inference_stats.fail.count)

    before = failures()
    inp = grpcclient.InferInput("in", [1, 2], "FP32")
    inp._raw_content = b"\x00" * 12  # 3 floats for a shape of 2: refused while decoding
    code, message = refusal(lambda: client.infer("echo_fp32", [inp]))
    assert code == "StatusCode.INVALID_ARGUMENT" and "needs 8 bytes" in message
    assert failures() == before + 1


def test_a_deadline_that_expires(server: RunningServer, client: grpcclient.InferenceServerClient) -> None:
    x = np.ones((1, 4), np.float32)
    code, _ = refusal(lambda: client.infer("slow", [grpc_input("x", x, "FP32")], client_timeout=0.05))
    assert code == "StatusCode.DEADLINE_EXCEEDED"
    assert client.infer("slow", [grpc_input("x", x, "FP32")], client_timeout=30).as_numpy("y") is not None


def test_the_deadline_reaches_the_request_context_in_event_loop_time(
    server: RunningServer, client: grpcclient.InferenceServerClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    import asyncio

    router = server.server.router
    seen: list[float | None] = []
    infer = router.infer

    def spy(ctx: Any, *args: Any) -> None:
        seen.append(None if ctx.deadline is None else ctx.deadline - asyncio.get_running_loop().time())
        infer(ctx, *args)

    monkeypatch.setattr(router, "infer", spy)
    x = grpc_input("x", np.ones((1, 4), np.float32), "FP32")
    client.infer("mlp", [x], client_timeout=20)
    client.infer("mlp", [x])
    # grpcio sends the timeout rounded up to its wire format's precision: a little over 20 s may arrive.
    assert seen[0] is not None and 15 < seen[0] <= 21
    assert seen[1] is None


def test_unserved_methods_say_so(server: RunningServer, client: grpcclient.InferenceServerClient) -> None:
    code, message = refusal(lambda: client.get_system_shared_memory_status())
    assert code == "StatusCode.UNIMPLEMENTED" and "shared memory is not supported" in message
    with grpc.insecure_channel(server.grpc_address) as channel, pytest.raises(grpc.RpcError) as info:
        stream = service_pb2_grpc.GRPCInferenceServiceStub(channel).ModelStreamInfer(
            iter([service_pb2.ModelInferRequest(model_name="mlp")])
        )
        next(iter(stream))
    error: Any = info.value
    assert error.code() == grpc.StatusCode.UNIMPLEMENTED and "ModelInfer" in error.details()


# ---- the model repository extension -----------------------------------------------------------


def test_repository_index_is_what_http_answers(
    client: grpcclient.InferenceServerClient, http: httpclient.InferenceServerClient
) -> None:
    got = [(m.name, m.version, m.state, m.reason) for m in client.get_model_repository_index().models]
    want = [(m["name"], m["version"], m["state"], m["reason"] or "") for m in http.get_model_repository_index()]
    assert got == want and ("broken", "1", "UNAVAILABLE") in [g[:3] for g in got]


@pytest.mark.parametrize(
    ("headers", "status"),
    [(None, 401), ({"authorization": "Bearer wrong"}, 403), ({"authorization": "Basic " + TOKEN}, 401)],
)
def test_model_control_needs_the_admin_token(
    client: grpcclient.InferenceServerClient,
    http: httpclient.InferenceServerClient,
    headers: dict[str, str] | None,
    status: int,
) -> None:
    for call in ("load_model", "unload_model"):
        code, message = refusal(partial(getattr(client, call), "echo_int8", headers=headers))
        _, http_message = refusal(partial(getattr(http, call), "echo_int8", headers=headers))
        assert (code, message) == (CODES[status], http_message)
    assert client.is_model_ready("echo_int8")


def test_model_control_with_the_admin_token(client: grpcclient.InferenceServerClient) -> None:
    admin = {"authorization": f"Bearer {TOKEN}"}
    x = grpc_input("in", np.ones((1, 2), np.int8), "INT8")
    client.unload_model("echo_int8", headers=admin)
    assert not client.is_model_ready("echo_int8")
    index = {(m.name, m.version): m for m in client.get_model_repository_index().models}
    assert index[("echo_int8", "1")].state == "UNAVAILABLE"
    code, message = refusal(lambda: client.infer("echo_int8", [x]))
    assert code == "StatusCode.UNAVAILABLE" and "unloaded" in message
    ready = client.get_model_repository_index().models
    assert "echo_int8" not in {m.name for m in ready if m.state == "READY"}
    client.load_model("echo_int8", headers=admin)
    assert client.is_model_ready("echo_int8")
    np.testing.assert_array_equal(client.infer("echo_int8", [x]).as_numpy("out"), np.ones((1, 2), np.int8))
    code, message = refusal(lambda: client.load_model("echo_int8", headers=admin, config='{"max_batch_size": 2}'))
    assert code == "StatusCode.INVALID_ARGUMENT" and "model.toml" in message
    code, _ = refusal(lambda: client.load_model("nope", headers=admin))
    assert code == "StatusCode.NOT_FOUND"


def test_model_control_is_off_without_an_admin_token(repository: Path) -> None:
    running = RunningServer(repository, grpc_port=0).start()
    try:
        client = grpcclient.InferenceServerClient(running.grpc_address)
        code, message = refusal(lambda: client.unload_model("mlp", headers={"authorization": "Bearer anything"}))
        assert code == "StatusCode.PERMISSION_DENIED" and "model control is off" in message
    finally:
        running.stop()


def test_an_inference_token_guards_inference_and_model_data(tmp_path: Path) -> None:
    write_mlp(tmp_path / "mlp" / "1" / "model.onnx")
    running = RunningServer(tmp_path, grpc_port=0, tokens=Tokens(inference="t0ken")).start()
    try:
        client = grpcclient.InferenceServerClient(running.grpc_address)
        x = grpc_input("x", np.ones((1, 4), np.float32), "FP32")
        assert client.is_server_live() and client.is_server_ready()  # health stays open, as over HTTP
        for call in (lambda: client.infer("mlp", [x]), lambda: client.get_model_metadata("mlp")):
            assert refusal(call)[0] == "StatusCode.UNAUTHENTICATED"
        assert refusal(lambda: client.infer("mlp", [x], headers={"authorization": "Bearer nope"}))[0] == (
            "StatusCode.PERMISSION_DENIED"
        )
        assert client.infer("mlp", [x], headers={"authorization": "Bearer t0ken"}).as_numpy("y") is not None
    finally:
        running.stop()


# ---- lifecycle -------------------------------------------------------------------------------


def test_stop_finishes_grpc_calls_in_flight_and_refuses_new_ones(repository: Path) -> None:
    running = RunningServer(repository, grpc_port=0).start()
    client = grpcclient.InferenceServerClient(running.grpc_address)
    x = grpc_input("x", np.ones((2, 4), np.float32), "FP32")
    with ThreadPoolExecutor(1) as pool:
        in_flight = pool.submit(client.infer, "slow", [x])
        time.sleep(0.1)  # the call is running (~300 ms)
        stopper = threading.Thread(target=running.stop)
        stopper.start()
        assert in_flight.result(timeout=30).as_numpy("y").shape == (2, 3)
        stopper.join(timeout=60)
    assert refusal(lambda: client.is_server_live(client_timeout=2))[0] == "StatusCode.UNAVAILABLE"


def test_the_command_serves_grpc_beside_http_and_stops_on_sigterm(tmp_path: Path) -> None:
    write_mlp(tmp_path / "mlp" / "1" / "model.onnx")
    port, grpc_port = free_port(), free_port()
    command = [*SERVE, str(tmp_path), "--port", str(port), "--grpc-port", str(grpc_port)]
    proc = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        wait_until_ready(f"http://127.0.0.1:{port}")
        client = grpcclient.InferenceServerClient(f"127.0.0.1:{grpc_port}")
        assert client.is_server_ready()
        x = grpc_input("x", np.ones((1, 4), np.float32), "FP32")
        assert client.infer("mlp", [x]).as_numpy("y").shape == (1, 3)
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=30) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_a_grpc_port_in_use_is_a_usage_error(tmp_path: Path) -> None:
    write_mlp(tmp_path / "mlp" / "1" / "model.onnx")
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        grpc_port = taken.getsockname()[1]
        done = subprocess.run(
            [*SERVE, str(tmp_path), "--port", str(free_port()), "--grpc-port", str(grpc_port)],
            capture_output=True,
            text=True,
            timeout=60,
        )
    assert done.returncode == 2, done.stderr
    assert f"cannot listen for gRPC on 127.0.0.1:{grpc_port}" in done.stderr


def test_a_call_whose_deadline_passes_in_the_queue_is_never_computed(
    server: RunningServer, client: grpcclient.InferenceServerClient
) -> None:
    """A request holds the slow model (~300 ms); one with a 100 ms deadline queues behind it and gives up:
    when the engine is free it is dropped (cancelled or past its deadline), not run."""
    x = np.ones((1, 4), np.float32)
    before = httpx.get(f"{server.url}/v2/models/slow/versions/1/stats").json()["model_stats"][0]
    with ThreadPoolExecutor(2) as pool:
        blocker = pool.submit(client.infer, "slow", [grpc_input("x", x, "FP32")])
        # The blocker must hold the model first: on a starved machine a fixed sleep let the second
        # call arrive first, run at once and be counted.
        stats_url = f"{server.url}/v2/models/slow/versions/1/stats"
        for _ in range(300):
            if httpx.get(stats_url).json()["model_stats"][0]["in_flight"] >= 1:
                break
            time.sleep(0.01)
        with pytest.raises(InferenceServerException, match=r"(?i)deadline"):
            client.infer("slow", [grpc_input("x", x, "FP32")], client_timeout=0.1)
        blocker.result(timeout=30)
    time.sleep(0.2)
    after = httpx.get(f"{server.url}/v2/models/slow/versions/1/stats").json()["model_stats"][0]
    assert after["execution_count"] - before["execution_count"] == 1, "only the blocker ran"
    # Dropped and counted when it reached the queue; on a starved machine its deadline may pass
    # before the server even reads it, and then nothing is counted: either way, never computed.
    dropped = {k: after["dropped"][k] - before["dropped"][k] for k in ("disconnected", "deadline")}
    assert sum(dropped.values()) <= 1, dropped
