"""Requests from declared inputs: random values of each datatype, npz rows, encoded once."""

from __future__ import annotations

import json
from pathlib import Path

import httptools
import numpy as np
import pytest

from leanserve.errors import ClientError, UsageError
from leanserve.loadgen import run
from leanserve.loadgen.inputs import Target, TensorSpec, encode_request, file_samples, parse_spec, random_samples
from tests.loadgen.fake_server import FakeServer

SPECS = [
    TensorSpec("input_ids", "INT64", (-1, 7)),
    TensorSpec("attention_mask", "INT64", (-1, 7)),
    TensorSpec("image", "FP16", (-1, 1, 2, 2)),
    TensorSpec("flag", "BOOL", (-1,)),
    TensorSpec("text", "BYTES", (-1, 2)),
]


def test_random_samples_follow_the_declared_shapes_and_datatypes() -> None:
    samples = random_samples(SPECS, count=3)
    assert len(samples) == 3
    s = samples[0]
    assert s["input_ids"].shape == (1, 7) and s["input_ids"].dtype == np.int64 and s["input_ids"].max() < 100
    assert set(np.unique(s["attention_mask"])) <= {0, 1}
    assert s["image"].dtype == np.float16 and s["image"].shape == (1, 1, 2, 2)
    assert s["flag"].dtype == np.bool_ and s["text"].shape == (1, 2)
    assert not np.array_equal(samples[0]["image"], samples[1]["image"])


def _parse(raw: bytes) -> tuple[bytes, dict[bytes, bytes], bytes]:
    class Collect:
        def __init__(self) -> None:
            self.headers: dict[bytes, bytes] = {}
            self.body = b""
            self.url = b""

        def on_url(self, url: bytes) -> None:
            self.url += url

        def on_header(self, name: bytes, value: bytes) -> None:
            self.headers[name.lower()] = value

        def on_body(self, body: bytes) -> None:
            self.body += body

    c = Collect()
    httptools.HttpRequestParser(c).feed_data(raw)
    return c.url, c.headers, c.body


def test_a_json_request_is_complete_http() -> None:
    sample = random_samples(SPECS, count=1)[0]
    raw = encode_request("h:1", Target("m/x", "2"), sample, SPECS, binary=False, headers={"Authorization": "Bearer t"})
    url, headers, body = _parse(raw)
    assert url == b"/v2/models/m%2Fx/versions/2/infer" and headers[b"authorization"] == b"Bearer t"
    doc = json.loads(body)
    assert [i["name"] for i in doc["inputs"]] == [s.name for s in SPECS]
    assert doc["inputs"][4]["data"] == ["leanserve", "leanserve"]


def test_a_binary_request_declares_its_header_length() -> None:
    spec = [TensorSpec("x", "FP32", (-1, 4))]
    sample = {"x": np.arange(4, dtype=np.float32).reshape(1, 4)}
    _, headers, body = _parse(encode_request("h:1", Target("m"), sample, spec, binary=True, headers={}))
    length = int(headers[b"inference-header-content-length"])
    header = json.loads(body[:length])
    assert header["inputs"][0]["parameters"] == {"binary_data_size": 16}
    assert np.frombuffer(body[length:], np.float32).tolist() == [0, 1, 2, 3]


def test_npz_rows_become_requests(tmp_path: Path) -> None:
    spec = [TensorSpec("x", "FP32", (-1, 4))]
    np.savez(tmp_path / "d.npz", x=np.ones((100, 4)), other=np.zeros(3))
    samples = file_samples(tmp_path / "d.npz", spec)
    assert len(samples) == 64 and samples[0]["x"].dtype == np.float32 and samples[0]["x"].shape == (1, 4)
    with pytest.raises(UsageError, match="no array named 'y'"):
        file_samples(tmp_path / "d.npz", [TensorSpec("y", "FP32", (-1, 4))])


def test_declared_inputs() -> None:
    assert parse_spec("x:FP32:-1,64") == TensorSpec("x", "FP32", (-1, 64))
    for bad in ("x", "x:FP32", "x:NOPE:1", ":FP32:1", "x:FP32:a"):
        with pytest.raises(UsageError):
            parse_spec(bad)


def test_a_server_without_metadata_takes_inputs_from_the_data_file(tmp_path: Path) -> None:
    np.savez(tmp_path / "d.npz", x=np.ones((4, 4), np.float32))
    with FakeServer(lambda arrived: arrived, metadata=False) as server:
        report = run(server.url, "fake", data=tmp_path / "d.npz", concurrency=[1], duration_s=0.3, warmup_s=0)
        assert report.results[0].errors == {} and server.requests > 0
        declared = run(
            server.url, "fake", inputs=[parse_spec("x:FP32:-1,4")], concurrency=[1], duration_s=0.3, warmup_s=0
        )
        assert declared.results[0].errors == {}
        with pytest.raises(ClientError, match="answered 404") as raised:
            run(server.url, "fake", concurrency=[1], duration_s=0.3)
        assert "--inputs" in str(raised.value)
