"""Request and result types: tritonclient's names and argument order, checked where they are built."""

from __future__ import annotations

import numpy as np
import pytest
import tritonclient.http as triton

from leanserve import InferInput, InferResult
from leanserve.errors import UsageError
from leanserve.protocol import (
    InferOutput,
    InferRequest,
    Limits,
    decode_infer_request,
    decode_infer_result,
    encode_infer_request,
    encode_infer_result,
)


def test_built_as_tritonclient_builds_it() -> None:
    x = np.arange(6, dtype=np.float32).reshape(2, 3)
    ours = InferInput("x", [2, 3], "FP32")
    theirs = triton.InferInput("x", [2, 3], "FP32")
    assert ours.set_data_from_numpy(x) is ours
    theirs.set_data_from_numpy(x)
    assert (ours.name, list(ours.shape), ours.datatype) == (theirs.name(), theirs.shape(), theirs.datatype())
    assert ours.data is x and ours.shape == (2, 3)
    assert InferInput("x", x.shape, "FP32", x).data is x  # or the data right away


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("", [1], "FP32"), "non-empty name"),
        (("x", [1], "FLOAT"), "unknown datatype 'FLOAT'"),
        (("x", [1], ["FP32"]), "unknown datatype"),
        (("x", [2, -1], "FP32"), "non-negative integers"),
        (("x", [2, 1.5], "FP32"), "non-negative integers"),
        (("x", [True], "FP32"), "non-negative integers"),
        (("x", "23", "FP32"), "sequence of non-negative integers"),
        (("x", [2, 3], "FP32", np.zeros((3, 2), np.float32)), "shape is [2, 3] but the array has [3, 2]"),
        (("x", [2], "INT64", np.zeros(2, np.int32)), "datatype is INT64 but the array holds int32"),
        (("x", [2], "FP32", [1.0, 2.0]), "must be a numpy array"),
        (("x", [2], "FP32", np.zeros(2, np.complex64)), "complex64 has no Open Inference Protocol datatype"),
    ],
)
def test_a_wrong_input_fails_where_it_is_built(args: tuple[object, ...], message: str) -> None:
    with pytest.raises(UsageError, match=message.replace("[", r"\[").replace("]", r"\]")):
        InferInput(*args)  # type: ignore[arg-type]


def test_numpy_dims_and_text_arrays_are_accepted() -> None:
    shape = np.zeros((2, 3)).shape[0], np.int64(3)
    assert InferInput("x", shape, "FP32").shape == (2, 3) and type(InferInput("x", shape, "FP32").shape[1]) is int
    assert InferInput("s", [2], "BYTES", np.array(["a", "b"])).datatype == "BYTES"
    assert InferInput("s", [1], "BYTES", np.array([b"a"], dtype=object)).data.shape == (1,)


def test_an_input_without_data_says_how_to_give_it() -> None:
    inp = InferInput("x", [1], "FP32")
    with pytest.raises(UsageError, match=r"input 'x' has no data \(call set_data_from_numpy\(array\)\)"):
        _ = inp.data
    assert "no data" in repr(inp)


def test_round_trip_through_both_codecs() -> None:
    x = np.array([[1.5, -2.0]], np.float32)
    for binary in (False, True):
        body, header_length = encode_infer_request(InferRequest([InferInput("x", x.shape, "FP32", x)]), binary)
        (decoded,) = decode_infer_request(body, header_length, Limits()).inputs
        assert isinstance(decoded, InferInput)
        assert (decoded.name, decoded.shape, decoded.datatype) == ("x", (1, 2), "FP32")
        np.testing.assert_array_equal(decoded.data, x)


def test_result_as_numpy_like_tritonclient() -> None:
    y = np.array([[0.25, 0.75]], np.float32)
    body, header_length = encode_infer_result(InferResult("m", "1", [InferOutput("y", y, binary_data=True)]))
    ours = decode_infer_result(body, header_length)
    theirs = triton.InferResult.from_response_body(body, header_length=header_length)
    np.testing.assert_array_equal(ours.as_numpy("y"), theirs.as_numpy("y"))
    assert ours.as_numpy("missing") is None and theirs.as_numpy("missing") is None
