"""Every Open Inference Protocol datatype through a real server, JSON and binary, via tritonclient."""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import pytest
import tritonclient.http as httpclient
from hypothesis import HealthCheck, given, settings

from leanserve.protocol import DATATYPES
from tests.fixtures.onnx_models import write_echo_models
from tests.fixtures.tensors import arrays, as_utf8

from .conftest import RunningServer


@pytest.fixture(scope="module")
def echo_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    """One Identity model per datatype: what goes in must come back bit for bit."""
    server = RunningServer(write_echo_models(tmp_path_factory.mktemp("echo"))).start()
    yield server
    server.stop()


@pytest.mark.parametrize("datatype", DATATYPES)
@pytest.mark.parametrize("binary", [True, False])
def test_round_trip(echo_server: RunningServer, datatype: str, binary: bool) -> None:
    client = httpclient.InferenceServerClient(f"127.0.0.1:{echo_server.port}")

    @settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
    @given(arrays(datatype))
    def check(x: np.ndarray) -> None:
        if datatype == "BYTES":
            x = as_utf8(x)
        inp = httpclient.InferInput("in", list(x.shape), datatype)
        inp.set_data_from_numpy(x, binary_data=binary)
        out = httpclient.InferRequestedOutput("out", binary_data=binary)
        got = client.infer(f"echo_{datatype.lower()}", [inp], outputs=[out]).as_numpy("out")
        assert got is not None
        assert got.shape == x.shape
        if datatype == "BYTES":
            as_bytes = [v if isinstance(v, bytes) else str(v).encode() for v in got.ravel()]
            assert as_bytes == list(x.ravel())
        else:
            assert got.dtype == x.dtype
            np.testing.assert_array_equal(got, x)

    check()


def test_bytes_that_are_not_utf8_are_a_clear_400(echo_server: RunningServer) -> None:
    client = httpclient.InferenceServerClient(f"127.0.0.1:{echo_server.port}")
    inp = httpclient.InferInput("in", [1, 1], "BYTES")
    inp.set_data_from_numpy(np.array([[b"\x80abc"]], dtype=np.object_), binary_data=True)
    from tritonclient.utils import InferenceServerException

    with pytest.raises(InferenceServerException, match="not UTF-8"):
        client.infer("echo_bytes", [inp])
