"""Every bad request gets a clear 4xx/5xx JSON error naming what and where, and the server keeps serving."""

from __future__ import annotations

import socket

import httpx
import numpy as np
import orjson
import pytest

from .conftest import RunningServer

GOOD = {"inputs": [{"name": "x", "datatype": "FP32", "shape": [1, 4], "data": [1, 2, 3, 4]}]}


def assert_still_serving(server: RunningServer) -> None:
    r = httpx.post(f"{server.url}/v2/models/mlp/infer", json=GOOD)
    assert r.status_code == 200, r.text


def tensor(**overrides: object) -> dict[str, object]:
    t: dict[str, object] = {"name": "x", "datatype": "FP32", "shape": [1, 4], "data": [1, 2, 3, 4]}
    t.update(overrides)
    return {"inputs": [t]}


@pytest.mark.parametrize(
    ("path", "status", "fragment"),
    [
        ("/v2/models/nope/infer", 404, "unknown model 'nope'"),
        ("/v2/models/mlp/versions/9/infer", 404, "no version 9"),
        ("/v2/models/mlp/versions/abc/infer", 404, "no version 'abc'"),
        ("/v2/models/broken/infer", 503, "broken"),
        ("/v2/models/..%2F..%2Fetc/infer", 400, "model name"),
        ("/v2/models/%2E%2E/infer", 400, "model name"),
        ("/v2/models/a%00b/infer", 400, "model name"),
    ],
)
def test_routing_errors(server: RunningServer, path: str, status: int, fragment: str) -> None:
    r = httpx.post(server.url + path, json=GOOD)
    assert r.status_code == status, r.text
    assert fragment in r.json()["error"]
    assert_still_serving(server)


@pytest.mark.parametrize(
    ("body", "fragment"),
    [
        (tensor(datatype="INT64", data=[1, 2, 3, 4]), "input 'x': expected datatype FP32, got INT64"),
        (tensor(shape=[1, 5], data=[1, 2, 3, 4, 5]), "input 'x'"),
        (tensor(shape=[1, 4], data=[1, 2, 3]), "4 elements"),
        (tensor(name="z"), "'z'"),
        (tensor(datatype="FP99"), "FP99"),
        (tensor(data=["a", "b", "c", "d"]), "input 'x'"),
        (tensor(shape=[9, 4], data=[0.0] * 36), "9"),  # over max_batch_size 8
        ({"inputs": []}, "'x'"),  # the missing input is named
        ({"nope": 1}, "inputs"),
        (tensor(shape=[1, 4], data=[[1, 2], [3, 4, 5]]), "input 'x'"),
    ],
)
def test_invalid_inputs_are_400_naming_the_input(server: RunningServer, body: dict[str, object], fragment: str) -> None:
    r = httpx.post(f"{server.url}/v2/models/mlp/infer", json=body)
    assert r.status_code == 400, r.text
    assert fragment in r.json()["error"], r.json()["error"]
    assert_still_serving(server)


def test_malformed_json(server: RunningServer) -> None:
    r = httpx.post(
        f"{server.url}/v2/models/mlp/infer", content=b'{"inputs": [', headers={"content-type": "application/json"}
    )
    assert r.status_code == 400
    assert "JSON" in r.json()["error"]
    assert_still_serving(server)


def test_json_nesting_depth_is_bounded(server: RunningServer) -> None:
    deep = "[" * 200 + "]" * 200
    good = '{"name": "x", "datatype": "FP32", "shape": [1, 4], "data": [1,2,3,4]}'
    body = f'{{"inputs": [{good}], "parameters": {{"p": {deep}}}}}'
    r = httpx.post(f"{server.url}/v2/models/mlp/infer", content=body.encode())
    assert r.status_code == 400
    assert "deep" in r.json()["error"] or "depth" in r.json()["error"]
    assert_still_serving(server)


def test_declared_shape_cannot_make_the_server_allocate(server: RunningServer) -> None:
    body = tensor(shape=[2**40, 4], data=[1, 2, 3, 4])
    r = httpx.post(f"{server.url}/v2/models/mlp/infer", json=body)
    assert r.status_code == 400
    header = (
        b'{"inputs":[{"name":"x","datatype":"FP32","shape":[100000000,4],'
        b'"parameters":{"binary_data_size":1600000000}}]}'
    )
    r = httpx.post(
        f"{server.url}/v2/models/mlp/infer",
        content=header + b"\0" * 16,
        headers={"Inference-Header-Content-Length": str(len(header))},
    )
    assert r.status_code == 400, r.text
    assert_still_serving(server)


@pytest.mark.parametrize("length", ["-1", "999999", "abc"])
def test_binary_header_length_that_lies(server: RunningServer, length: str) -> None:
    header = b'{"inputs":[{"name":"x","datatype":"FP32","shape":[1,4],"parameters":{"binary_data_size":16}}]}'
    body = header + np.ones(4, np.float32).tobytes()
    r = httpx.post(
        f"{server.url}/v2/models/mlp/infer", content=body, headers={"Inference-Header-Content-Length": length}
    )
    assert r.status_code == 400, r.text
    assert "Inference-Header-Content-Length" in r.json()["error"]
    assert_still_serving(server)


def test_body_over_the_limit_is_413(server: RunningServer) -> None:
    r = httpx.post(f"{server.url}/v2/models/mlp/infer", content=b"x" * (2 << 20))
    assert r.status_code == 413
    assert "limit" in r.json()["error"]
    assert_still_serving(server)


def test_unknown_endpoint_and_wrong_method(server: RunningServer) -> None:
    r = httpx.get(f"{server.url}/v2/nothing-here")
    assert r.status_code == 404
    assert "no such endpoint" in r.json()["error"]
    r = httpx.get(f"{server.url}/v2/models/mlp/infer")
    assert r.status_code == 405
    assert "not allowed" in r.json()["error"]
    assert_still_serving(server)


def test_malformed_http_is_answered_and_the_connection_closed(server: RunningServer) -> None:
    with socket.create_connection(("127.0.0.1", server.port), timeout=5) as s:
        s.sendall(b"GARBAGE\x00\x01 / HTTP/9.9\r\n\r\n")
        data = s.recv(65536)
    assert data.startswith(b"HTTP/1.1 400")
    assert b'"error"' in data
    assert_still_serving(server)


def test_a_client_that_disconnects_mid_request_harms_no_one(server: RunningServer) -> None:
    with socket.create_connection(("127.0.0.1", server.port), timeout=5) as s:
        s.sendall(b'POST /v2/models/mlp/infer HTTP/1.1\r\nHost: x\r\nContent-Length: 1000\r\n\r\n{"inputs"')
    assert_still_serving(server)


@pytest.mark.parametrize("length", ["+90", "9_0", "٩٠"])
def test_binary_header_length_must_be_plain_ascii_digits(server: RunningServer, length: str) -> None:
    header = b'{"inputs":[{"name":"x","datatype":"FP32","shape":[1,4],"parameters":{"binary_data_size":16}}]}'
    r = httpx.post(
        f"{server.url}/v2/models/mlp/infer",
        content=header + np.ones(4, np.float32).tobytes(),
        headers={"Inference-Header-Content-Length": length.encode()},
    )
    assert r.status_code == 400, r.text
    assert "non-negative integer" in r.json()["error"]
    assert_still_serving(server)


@pytest.mark.parametrize(
    "path",
    [
        "/v2/models/..%2F..%2Fetc",
        "/v2/models/..%2fetc/ready",
        "/v2/models/..%2Fx/versions/1/config",
        "/v2/models/a%5Cb",
    ],
)
def test_encoded_separators_in_a_model_name_are_400_on_every_endpoint(server: RunningServer, path: str) -> None:
    r = httpx.get(server.url + path)
    assert r.status_code == 400, r.text
    assert "invalid model name" in r.json()["error"]
    assert_still_serving(server)


def test_expect_100_continue_is_answered_before_the_body_and_content_length_is_checked(server: RunningServer) -> None:
    body = orjson.dumps(GOOD)
    head = b"POST /v2/models/mlp/infer HTTP/1.1\r\nHost: x\r\nExpect: 100-Continue\r\nContent-Length: %d\r\n\r\n"
    with socket.create_connection(("127.0.0.1", server.port), timeout=5) as s:
        s.sendall(head % len(body))
        assert s.recv(65536) == b"HTTP/1.1 100 Continue\r\n\r\n"
        s.sendall(body)
        assert s.recv(65536).startswith(b"HTTP/1.1 200")
    with socket.create_connection(("127.0.0.1", server.port), timeout=5) as s:
        s.sendall(b"POST /v2/models/mlp/infer HTTP/1.1\r\nHost: x\r\nContent-Length: 12x\r\n\r\n")
        data = s.recv(65536)
    assert data.startswith(b"HTTP/1.1 400")
    assert_still_serving(server)
