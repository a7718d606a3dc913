"""Every Open Inference Protocol datatype through a real server, JSON and binary, via tritonclient."""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import onnx
import pytest
import tritonclient.http as httpclient
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp
from onnx import TensorProto, helper

from .conftest import RunningServer

# OIP datatype -> (ONNX element type, numpy dtype)
TYPES = {
    "BOOL": (TensorProto.BOOL, np.bool_),
    "UINT8": (TensorProto.UINT8, np.uint8),
    "UINT16": (TensorProto.UINT16, np.uint16),
    "UINT32": (TensorProto.UINT32, np.uint32),
    "UINT64": (TensorProto.UINT64, np.uint64),
    "INT8": (TensorProto.INT8, np.int8),
    "INT16": (TensorProto.INT16, np.int16),
    "INT32": (TensorProto.INT32, np.int32),
    "INT64": (TensorProto.INT64, np.int64),
    "FP16": (TensorProto.FLOAT16, np.float16),
    "FP32": (TensorProto.FLOAT, np.float32),
    "FP64": (TensorProto.DOUBLE, np.float64),
    "BYTES": (TensorProto.STRING, np.object_),
}


@pytest.fixture(scope="module")
def echo_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    """One Identity model per datatype: what goes in must come back bit for bit."""
    root = tmp_path_factory.mktemp("echo")
    for name, (elem, _) in TYPES.items():
        graph = helper.make_graph(
            [helper.make_node("Identity", ["in"], ["out"])],
            f"echo_{name}",
            [helper.make_tensor_value_info("in", elem, ["batch", "n"])],
            [helper.make_tensor_value_info("out", elem, ["batch", "n"])],
        )
        model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
        model.ir_version = 8
        path = root / f"echo_{name.lower()}" / "1" / "model.onnx"
        path.parent.mkdir(parents=True)
        onnx.save(model, path)
    server = RunningServer(root).start()
    yield server
    server.stop()


def arrays(datatype: str) -> st.SearchStrategy[np.ndarray]:
    shape = hnp.array_shapes(min_dims=2, max_dims=2, min_side=1, max_side=6)
    if datatype == "BYTES":
        return shape.flatmap(
            lambda s: st.lists(st.binary(max_size=12), min_size=s[0] * s[1], max_size=s[0] * s[1]).map(
                lambda items: np.array(items, dtype=np.object_).reshape(s)
            )
        )
    dtype = TYPES[datatype][1]
    # JSON cannot carry NaN or infinities (they travel as null); binary data carries any bits.
    elements = (
        hnp.from_dtype(np.dtype(dtype), allow_nan=False, allow_infinity=False)
        if dtype in (np.float16, np.float32, np.float64)
        else None
    )
    return hnp.arrays(dtype, shape, elements=elements)


@pytest.mark.parametrize("datatype", list(TYPES))
@pytest.mark.parametrize("binary", [True, False])
def test_round_trip(echo_server: RunningServer, datatype: str, binary: bool) -> None:
    client = httpclient.InferenceServerClient(f"127.0.0.1:{echo_server.port}")

    @settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
    @given(arrays(datatype))
    def check(x: np.ndarray) -> None:
        if datatype == "BYTES":
            # ONNX Runtime string tensors (and JSON strings) carry UTF-8 text only.
            x = np.vectorize(lambda b: b.decode("utf-8", "replace").encode(), otypes=[object])(x)
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
