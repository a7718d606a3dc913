"""ModelInferRequest -> InferRequest and back, checked as the HTTP codecs check, without a socket."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
from tritonclient.grpc import service_pb2

from leanserve.errors import InvalidInput, PayloadTooLarge
from leanserve.protocol import InferOutput, InferResult, Limits
from leanserve.server.grpc.codec import decode_infer_request, encode_infer_result, parameters_of, set_parameters

LIMITS = Limits(max_tensor_elements=100, max_inputs=3)


def request(*tensors: tuple[str, str, list[int]], raw: list[bytes] | None = None) -> Any:
    message = service_pb2.ModelInferRequest(model_name="m")
    for name, datatype, shape in tensors:
        message.inputs.add(name=name, datatype=datatype, shape=shape)
    message.raw_input_contents.extend(raw or [])
    return message


def test_raw_contents_become_arrays_without_a_copy() -> None:
    x = np.arange(6, dtype=np.float32).reshape(2, 3)
    message = request(("x", "FP32", [2, 3]), raw=[x.tobytes()])
    message.id = "r-1"
    message.parameters["priority"].uint64_param = 2
    message.outputs.add(name="y").parameters["classification"].int64_param = 1
    decoded = decode_infer_request(message, LIMITS)
    (inp,) = decoded.inputs
    assert (inp.name, inp.datatype, inp.shape) == ("x", "FP32", (2, 3))
    np.testing.assert_array_equal(inp.data, x)
    assert not inp.data.flags.writeable  # a view of the message's bytes
    assert decoded.id == "r-1" and decoded.parameters == {"priority": 2}
    assert decoded.outputs is not None and decoded.outputs[0].name == "y"
    assert decoded.outputs[0].parameters == {"classification": 1}


def test_a_tensor_with_no_elements_needs_no_data() -> None:
    decoded = decode_infer_request(request(("x", "INT32", [0, 4])), LIMITS)
    assert decoded.inputs[0].data.shape == (0, 4)


@pytest.mark.parametrize(
    ("message", "fragment"),
    [
        (request(("x", "FP99", [1])), "input 'x': unknown datatype 'FP99'"),
        (request(("x", "", [1])), "input 'x': needs a 'datatype'"),
        (request(("", "FP32", [1])), "inputs[0] needs a name"),
        (request(("x", "FP32", [1, -2])), "input 'x': 'shape' must be an array of at most 32 non-negative integers"),
        (request(("x", "FP32", [1] * 33)), "at most 32"),
        (request(("x", "FP32", [2])), "input 'x': has neither contents nor raw_input_contents"),
        (request(("x", "FP32", [2]), raw=[b"\0" * 4]), "input 'x': shape [2] of FP32 needs 8 bytes"),
        (request(("x", "FP32", [1]), ("y", "FP32", [1]), raw=[b"\0" * 4]), "1 raw_input_contents for 2 inputs"),
        (request(*[(f"x{i}", "FP32", [1]) for i in range(4)]), "4 inputs, more than the limit of 3"),
        (request(("x", "BOOL", [1]), raw=[b"\x02"]), "BOOL binary data must hold only bytes 0 and 1"),
        (request(("x", "BYTES", [2]), raw=[b"\1\0\0\0a\5\0\0\0b"]), "BYTES element 1 has length 5, which runs past"),
    ],
)
def test_malformed_requests_are_refused_where_they_are_wrong(message: Any, fragment: str) -> None:
    with pytest.raises(InvalidInput) as info:
        decode_infer_request(message, LIMITS)
    assert fragment in str(info.value)


def test_raw_and_typed_contents_for_one_tensor_are_refused() -> None:
    message = request(("x", "FP32", [1]), raw=[b"\0" * 4])
    message.inputs[0].contents.fp32_contents.append(1.0)
    with pytest.raises(InvalidInput, match="both contents and raw_input_contents"):
        decode_infer_request(message, LIMITS)


def test_shared_memory_is_refused_with_what_to_do() -> None:
    message = request(("x", "FP32", [1]))
    message.inputs[0].parameters["shared_memory_region"].string_param = "region"
    with pytest.raises(InvalidInput, match="shared memory is not supported"):
        decode_infer_request(message, LIMITS)


def test_element_counts_are_checked_from_the_shape_before_allocating() -> None:
    big = request(("x", "UINT8", [1, 101]), raw=[b"\0" * 101])
    with pytest.raises(PayloadTooLarge, match="101 elements exceed the limit of 100"):
        decode_infer_request(big, LIMITS)
    # A shape that claims far more than the bytes present is refused on the byte count, at no cost.
    huge = request(("x", "FP32", [1 << 40, 1 << 20]), raw=[b"\0" * 4])
    with pytest.raises(InvalidInput, match="needs"):
        decode_infer_request(huge, LIMITS)


def test_typed_contents_take_the_json_codecs_checks() -> None:
    message = request(("x", "UINT8", [1, 2]))
    message.inputs[0].contents.uint_contents.extend([1, 256])
    with pytest.raises(InvalidInput, match="256 \\(element 1\\) is out of range for UINT8"):
        decode_infer_request(message, LIMITS)
    message = request(("x", "BOOL", [3]))
    message.inputs[0].contents.bool_contents.extend([True, False, True])
    assert decode_infer_request(message, LIMITS).inputs[0].data.tolist() == [True, False, True]


def test_results_go_back_in_raw_output_contents() -> None:
    y = np.arange(4, dtype=np.int64).reshape(2, 2)
    text = np.array([["é", "b"]], dtype=object)
    result = InferResult("m", "3", [InferOutput("y", y), InferOutput("t", text)], id="r-1", parameters={"a": 1})
    response = encode_infer_result(result)
    assert (response.model_name, response.model_version, response.id) == ("m", "3", "r-1")
    assert [(o.name, o.datatype, list(o.shape)) for o in response.outputs] == [
        ("y", "INT64", [2, 2]),
        ("t", "BYTES", [1, 2]),
    ]
    assert response.raw_output_contents[0] == y.tobytes()
    assert response.raw_output_contents[1] == b"\2\0\0\0" + "é".encode() + b"\1\0\0\0b"
    assert parameters_of(response.parameters) == {"a": 1}


def test_parameters_keep_their_kind() -> None:
    message = service_pb2.ModelInferResponse()
    values = {"flag": True, "n": -3, "big": 2**63, "x": 0.5, "s": "text", "huge": 2**70, "other": [1, 2]}
    set_parameters(message.parameters, values)
    assert parameters_of(message.parameters) == {**values, "huge": str(2**70), "other": "[1, 2]"}
