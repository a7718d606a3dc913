"""HTTP/2 under the gRPC service, against a real server: flow control both ways, compressed requests,
concurrency on one connection, cancellation, clients that are not gRPC, and GOAWAY on shutdown.

Clients: grpcio and tritonclient.grpc (nobody here wrote them), and h2's client state machine on a
raw socket where a test must see the frames themselves."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import grpc
import h2.config
import h2.connection
import hpack
import httpx
import numpy as np
import pytest
import tritonclient.grpc as grpcclient
from hyperframe.frame import DataFrame, Frame, GoAwayFrame, HeadersFrame
from tritonclient.grpc import service_pb2, service_pb2_grpc

from leanserve.protocol import Limits
from leanserve.server.grpc.wire import frame
from tests.fixtures.onnx_models import write_echo_models, write_mlp, write_slow_affine

from ..conftest import RunningServer

BODY_LIMIT = 16 << 20
INFER = "/inference.GRPCInferenceService/ModelInfer"


@pytest.fixture(scope="module")
def repository(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = write_echo_models(tmp_path_factory.mktemp("transport-repo"))
    write_mlp(root / "mlp" / "1" / "model.onnx")
    (root / "mlp" / "model.toml").write_text("max_batch_size = 64\n")
    write_slow_affine(root / "slow" / "1" / "model.onnx", side=2048)  # ~300 ms a run
    (root / "slow" / "model.toml").write_text(
        "max_batch_size = 8\n[dynamic_batching]\nadaptive_batch_size = false\n"
        "[runtime]\nintra_op_threads = 1\nallow_spinning = false\n"
    )
    return root


@pytest.fixture(scope="module")
def server(repository: Path) -> Iterator[RunningServer]:
    running = RunningServer(repository, Limits(max_body_bytes=BODY_LIMIT), grpc_port=0).start()
    yield running
    running.stop()


@pytest.fixture
def client(server: RunningServer) -> grpcclient.InferenceServerClient:
    return grpcclient.InferenceServerClient(server.grpc_address)


def infer_request(model: str, x: np.ndarray, datatype: str, name: str = "x") -> bytes:
    request = service_pb2.ModelInferRequest(model_name=model)
    request.inputs.add(name=name, datatype=datatype, shape=x.shape)
    request.raw_input_contents.append(x.tobytes())
    data: bytes = request.SerializeToString()
    return data


def grpc_input(name: str, x: np.ndarray, datatype: str) -> grpcclient.InferInput:
    inp = grpcclient.InferInput(name, list(x.shape), datatype)
    inp.set_data_from_numpy(x)
    return inp


def test_a_tensor_larger_than_every_window_goes_both_ways(client: grpcclient.InferenceServerClient) -> None:
    """6 MB each way: more than the server's window for one stream (4 MiB) and the client's (64 KiB
    at first), so both sides wait for WINDOW_UPDATEs mid-message."""
    x = np.random.default_rng(0).integers(0, 255, size=(1, 6_000_000), dtype=np.uint8)
    y = client.infer("echo_uint8", [grpc_input("in", x, "UINT8")]).as_numpy("out")
    assert y is not None and np.array_equal(y, x)


@pytest.mark.parametrize("algorithm", ["gzip", "deflate"])
def test_a_compressed_request_is_answered(client: grpcclient.InferenceServerClient, algorithm: str) -> None:
    x = np.arange(4000, dtype=np.int32).reshape(1, 4000)
    y = client.infer("echo_int32", [grpc_input("in", x, "INT32")], compression_algorithm=algorithm).as_numpy("out")
    assert y is not None and np.array_equal(y, x)


def test_many_calls_in_flight_on_one_connection(server: RunningServer) -> None:
    x = np.ones((1, 4), np.float32)
    with grpc.insecure_channel(server.grpc_address) as channel:
        call = channel.unary_unary(INFER)
        futures = [call.future(infer_request("mlp", x * i, "FP32"), timeout=60) for i in range(300)]
        answers = [service_pb2.ModelInferResponse.FromString(f.result()) for f in futures]
    outputs = [np.frombuffer(a.raw_output_contents[0], np.float32) for a in answers]
    assert len(outputs) == 300 and all(o.shape == (3,) for o in outputs)
    assert np.array_equal(outputs[0], outputs[0]) and not np.array_equal(outputs[1], outputs[2])


def test_an_unknown_method_is_unimplemented(server: RunningServer) -> None:
    with grpc.insecure_channel(server.grpc_address) as channel, pytest.raises(grpc.RpcError) as info:
        channel.unary_unary("/inference.GRPCInferenceService/Nope")(b"", timeout=10)
    error: grpc.Call = info.value  # type: ignore[assignment]
    assert error.code() == grpc.StatusCode.UNIMPLEMENTED and "Nope" in (error.details() or "")


def test_a_call_the_client_cancels_is_dropped_before_the_engine(server: RunningServer) -> None:
    x = np.ones((1, 4), np.float32)
    stats_url = f"{server.url}/v2/models/slow/versions/1/stats"
    before = httpx.get(stats_url).json()["model_stats"][0]
    with grpc.insecure_channel(server.grpc_address) as channel:
        call = channel.unary_unary(INFER)
        blocker = call.future(infer_request("slow", x, "FP32"), timeout=30)
        for _ in range(300):  # the blocker holds the engine before the second call comes
            if httpx.get(stats_url).json()["model_stats"][0]["in_flight"] >= 1:
                break
            time.sleep(0.01)
        queued = call.future(infer_request("slow", x, "FP32"), timeout=30)
        time.sleep(0.05)  # it reaches the queue
        assert queued.cancel()
        blocker.result()
    time.sleep(0.2)
    after = httpx.get(stats_url).json()["model_stats"][0]
    assert after["execution_count"] - before["execution_count"] == 1, "only the blocker ran"
    assert after["dropped"]["disconnected"] - before["dropped"]["disconnected"] <= 1


def test_a_client_that_does_not_speak_http2_is_hung_up_on(
    server: RunningServer, client: grpcclient.InferenceServerClient
) -> None:
    host, port = server.grpc_address.rsplit(":", 1)
    with socket.create_connection((host, int(port)), timeout=10) as sock:
        sock.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        received = b""
        while chunk := sock.recv(65536):
            received += chunk
    assert b"HTTP/1.1" not in received  # no answer but h2's SETTINGS and GOAWAY, then the close
    assert client.is_server_live()


class RawClient:
    """h2's client state machine on a socket, to watch the frames a gRPC library hides. What comes
    back is read frame by frame with hyperframe and hpack: h2's client closes its state machine at
    GOAWAY and would refuse the answers that a graceful server still sends after it."""

    def __init__(self, address: str) -> None:
        host, port = address.rsplit(":", 1)
        self.sock = socket.create_connection((host, int(port)), timeout=20)
        self.h2 = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True))
        self.h2.initiate_connection()
        self.sock.sendall(self.h2.data_to_send())
        self.decoder = hpack.Decoder()

    def call(self, path: str, message: bytes) -> int:
        stream = self.h2.get_next_available_stream_id()
        headers = [(":method", "POST"), (":scheme", "http"), (":path", path), (":authority", "x")]
        headers += [("content-type", "application/grpc"), ("te", "trailers")]
        self.h2.send_headers(stream, headers)
        self.h2.send_data(stream, frame(message), end_stream=True)
        self.sock.sendall(self.h2.data_to_send())
        return stream

    def frames(self) -> Iterator[tuple[Frame, dict[bytes, bytes]]]:
        """Each frame (with its decoded headers, if any) until the server closes the connection."""
        buffer = b""
        while data := self.sock.recv(65536):
            buffer += data
            while len(buffer) >= 9:
                received, length = Frame.parse_frame_header(memoryview(buffer[:9]))
                if len(buffer) < 9 + length:
                    break
                received.parse_body(memoryview(buffer[9 : 9 + length]))
                buffer = buffer[9 + length :]
                headers = (
                    dict(self.decoder.decode(received.data, raw=True)) if isinstance(received, HeadersFrame) else {}
                )
                yield received, headers


def test_stop_says_goaway_then_answers_the_calls_in_flight(repository: Path) -> None:
    running = RunningServer(repository, grpc_port=0).start()
    raw = RawClient(running.grpc_address)
    stream = raw.call(INFER, infer_request("slow", np.ones((1, 4), np.float32), "FP32"))
    time.sleep(0.1)  # the call runs (~300 ms)
    with ThreadPoolExecutor(1) as pool:
        stopped = pool.submit(running.stop)
        seen: list[str] = []
        status = None
        for received, headers in raw.frames():
            if isinstance(received, GoAwayFrame):
                assert received.error_code == 0 and received.last_stream_id == stream
                seen.append("goaway")
            elif isinstance(received, DataFrame) and received.stream_id == stream:
                seen.append("answer")
            elif b"grpc-status" in headers:
                status = headers[b"grpc-status"]
        stopped.result(timeout=60)
    assert seen[:2] == ["goaway", "answer"] and status == b"0"


def test_calls_from_threads_on_separate_channels_all_answer(server: RunningServer) -> None:
    """Connections come and go while others carry calls: no state leaks from one to another."""
    x = np.ones((1, 4), np.float32)

    def calls(n: int) -> int:
        with grpc.insecure_channel(server.grpc_address) as channel:
            call = channel.unary_unary(INFER)
            return sum(1 for _ in range(n) if call(infer_request("mlp", x, "FP32"), timeout=30))

    with ThreadPoolExecutor(4) as pool:
        assert sum(pool.map(calls, [25] * 8)) == 200
    assert threading.active_count() < 50


def test_a_client_that_goes_away_mid_call_leaves_the_server_serving(
    server: RunningServer, client: grpcclient.InferenceServerClient
) -> None:
    raw = RawClient(server.grpc_address)
    raw.call(INFER, infer_request("slow", np.ones((1, 4), np.float32), "FP32"))
    time.sleep(0.05)
    raw.h2.close_connection()  # GOAWAY from the client, its call still running
    raw.sock.sendall(raw.h2.data_to_send())
    time.sleep(0.5)  # the call finishes with nobody to answer
    raw.sock.close()
    y = client.infer("slow", [grpc_input("x", np.ones((1, 4), np.float32), "FP32")]).as_numpy("y")
    assert y is not None and y.shape == (1, 3)


def test_a_stream_that_stays_open_is_told_at_once_that_streaming_is_not_served(server: RunningServer) -> None:
    """tritonclient's start_stream keeps its stream open: the refusal must not wait for its end."""
    release = threading.Event()

    def requests() -> Iterator[service_pb2.ModelInferRequest]:
        yield service_pb2.ModelInferRequest(model_name="mlp")
        release.wait(20)

    with grpc.insecure_channel(server.grpc_address) as channel:
        responses = service_pb2_grpc.GRPCInferenceServiceStub(channel).ModelStreamInfer(requests(), timeout=30)
        start = time.monotonic()
        with pytest.raises(grpc.RpcError) as info:
            next(responses)
        waited = time.monotonic() - start
        release.set()
    error: grpc.Call = info.value  # type: ignore[assignment]
    assert error.code() == grpc.StatusCode.UNIMPLEMENTED and "ModelInfer" in (error.details() or "")
    assert waited < 10
