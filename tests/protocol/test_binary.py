from __future__ import annotations

import struct
from collections.abc import Mapping, Sequence

import numpy as np
import orjson
import pytest

from leanserve.errors import InvalidInput, PayloadTooLarge
from leanserve.protocol import (
    InferRequest,
    Limits,
    decode_infer_request,
    decode_infer_result,
    parse_header_length,
)
from leanserve.protocol.binary import deserialize_bytes_tensor, serialize_bytes_tensor, tensor_to_binary


def binary_body(inputs: Sequence[Mapping[str, object]], blob: bytes) -> tuple[bytes, int]:
    header = orjson.dumps({"inputs": inputs})
    return header + blob, len(header)


def binary_input(datatype: str, shape: list[int], size: int, name: str = "x") -> dict[str, object]:
    return {"name": name, "datatype": datatype, "shape": shape, "parameters": {"binary_data_size": size}}


def decode(inputs: Sequence[Mapping[str, object]], blob: bytes, limits: Limits | None = None) -> InferRequest:
    body, header_length = binary_body(inputs, blob)
    return decode_infer_request(body, header_length, limits or Limits())


def assert_invalid(message: str, inputs: Sequence[Mapping[str, object]], blob: bytes) -> InvalidInput:
    with pytest.raises(InvalidInput) as caught:
        decode(inputs, blob)
    assert message in caught.value.message
    return caught.value


def bytes_element(data: bytes) -> bytes:
    return struct.pack("<I", len(data)) + data


# ---- decoding -----------------------------------------------------------------------------------


def test_binary_and_json_inputs_mix_in_order() -> None:
    inputs: list[Mapping[str, object]] = [
        binary_input("INT16", [2], 4, name="a"),
        {"name": "b", "datatype": "FP32", "shape": [1], "data": [0.5]},
        binary_input("BYTES", [1, 2], 4 + 2 + 4, name="c"),
        binary_input("BOOL", [3], 3, name="d"),
    ]
    blob = struct.pack("<2h", -1, 300) + bytes_element(b"hi") + bytes_element(b"") + b"\x01\x00\x01"
    request = decode(inputs, blob)
    a, b, c, d = (inp.data for inp in request.inputs)
    assert a.dtype == np.int16 and a.tolist() == [-1, 300]
    assert b.tolist() == [0.5]
    assert c.dtype == object and c.tolist() == [[b"hi", b""]]
    assert d.dtype == np.bool_ and d.tolist() == [True, False, True]
    assert all(inp.parameters == {} for inp in request.inputs)


def test_fixed_size_tensors_are_read_only_views_of_the_body() -> None:
    body, header_length = binary_body([binary_input("FP32", [2, 2], 16)], np.arange(4, dtype="<f4").tobytes())
    data = decode_infer_request(body, header_length, Limits()).inputs[0].data
    assert data.tolist() == [[0.0, 1.0], [2.0, 3.0]]
    assert not data.flags.writeable
    assert np.shares_memory(data, np.frombuffer(body, dtype=np.uint8))


def test_empty_tensors() -> None:
    request = decode([binary_input("FP64", [0, 3], 0), binary_input("BYTES", [0], 0, name="y")], b"")
    assert request.inputs[0].data.shape == (0, 3)
    assert request.inputs[1].data.shape == (0,)


@pytest.mark.parametrize(("value", "expected"), [(None, None), ("0", 0), ("12", 12), (" 12 ", 12), ("0012", 12)])
def test_parse_header_length(value: str | None, expected: int | None) -> None:
    assert parse_header_length(value) == expected


@pytest.mark.parametrize("value", ["", "abc", "-1", "+5", "1.5", "1_000", "١٢", "0x10"])
def test_header_length_that_is_not_an_integer(value: str) -> None:
    with pytest.raises(InvalidInput, match="Inference-Header-Content-Length must be a non-negative integer"):
        parse_header_length(value)


@pytest.mark.parametrize("header_length", [-1, 0, 10_000, True, 1.5, "20"])
def test_header_length_that_lies(header_length: object) -> None:
    body, _ = binary_body([binary_input("UINT8", [1], 1)], b"\x01")
    with pytest.raises(InvalidInput, match=r"Inference-Header-Content-Length is .* but the body has"):
        decode_infer_request(body, header_length, Limits())  # type: ignore[arg-type]


def test_header_length_that_cuts_or_overruns_the_json() -> None:
    body, header_length = binary_body([binary_input("UINT8", [2], 2)], b"\x01\x02")
    for wrong in (header_length - 1, header_length + 1):
        with pytest.raises(InvalidInput, match="request is not valid JSON"):
            decode_infer_request(body, wrong, Limits())


@pytest.mark.parametrize(
    ("datatype", "shape", "size", "message"),
    [
        ("FP32", [2, 3], 20, "input 'x': shape [2, 3] of FP32 needs 24 bytes, binary_data_size is 20"),
        ("FP32", [2, 3], 28, "input 'x': shape [2, 3] of FP32 needs 24 bytes, binary_data_size is 28"),
        ("INT64", [2**32, 2**32], 8, f"input 'x': shape [{2**32}, {2**32}] of INT64 needs {2**67} bytes"),
        ("BOOL", [3], 2, "input 'x': shape [3] of BOOL needs 3 bytes, binary_data_size is 2"),
    ],
)
def test_size_that_does_not_match_the_shape(datatype: str, shape: list[int], size: int, message: str) -> None:
    assert_invalid(message, [binary_input(datatype, shape, size)], b"\x00" * size)


def test_size_past_the_end_of_the_body() -> None:
    error = assert_invalid(
        "input 'x': binary_data_size is 100 bytes but only 8 bytes of binary data are left",
        [binary_input("FP64", [1], 100)],
        b"\x00" * 8,
    )
    assert error.hint == "binary_data_size must match the bytes sent for this tensor"


def test_binary_input_without_a_header_length() -> None:
    body = orjson.dumps({"inputs": [binary_input("UINT8", [1], 1)]})
    with pytest.raises(InvalidInput, match="only 0 bytes of binary data are left") as caught:
        decode_infer_request(body, None, Limits())
    assert caught.value.hint is not None and "Inference-Header-Content-Length" in caught.value.hint


def test_binary_data_nobody_claims() -> None:
    assert_invalid(
        "3 bytes of binary data after the JSON header are not claimed by any binary_data_size",
        [binary_input("UINT8", [2], 2)],
        b"\x01\x02\x03\x04\x05",
    )


@pytest.mark.parametrize("size", [-1, 1.0, "4", None, True])
def test_size_that_is_not_a_count(size: object) -> None:
    inputs = [{"name": "x", "datatype": "UINT8", "shape": [1], "parameters": {"binary_data_size": size}}]
    if size is None:  # null is as good as absent, and then there is no data at all
        assert_invalid("input 'x': has neither 'data' nor parameters.binary_data_size", inputs, b"")
    else:
        assert_invalid("input 'x': binary_data_size must be a non-negative integer", inputs, b"\x01")


def test_data_and_binary_data_size_together() -> None:
    inputs = [{**binary_input("UINT8", [1], 1), "data": [1]}]
    assert_invalid("input 'x': has both 'data' and parameters.binary_data_size", inputs, b"\x01")


def test_bool_bytes_other_than_zero_and_one() -> None:
    assert_invalid(
        "input 'x': BOOL binary data must hold only bytes 0 and 1",
        [binary_input("BOOL", [2], 2)],
        b"\x01\x02",
    )


@pytest.mark.parametrize(
    ("shape", "blob", "message"),
    [
        (
            [2],
            bytes_element(b"abc") + struct.pack("<I", 9) + b"xy",
            "input 'x': BYTES element 1 has length 9, which runs past the end of its binary data by 7 bytes",
        ),
        ([2], bytes_element(b"abc") + b"\x01\x00", "input 'x': BYTES binary data ends after 1 of 2 elements"),
        (
            [1],
            bytes_element(b"abc") + b"\x00\x00\x00\x00",
            "input 'x': BYTES binary data has 4 bytes left after its 1 elements",
        ),
        ([3], bytes_element(b"abcdefg"), "input 'x': shape [3] needs 3 BYTES elements, which cannot fit"),
        ([2**40], b"\x00" * 8, f"input 'x': shape [{2**40}] needs {2**40} BYTES elements, which cannot fit"),
    ],
)
def test_bytes_elements_that_do_not_add_up(shape: list[int], blob: bytes, message: str) -> None:
    assert_invalid(message, [binary_input("BYTES", shape, len(blob))], blob)


def test_element_limit() -> None:
    with pytest.raises(PayloadTooLarge, match="input 'x': 4 elements exceed the limit of 3"):
        decode([binary_input("UINT8", [4], 4)], b"\x00" * 4, Limits(max_tensor_elements=3))
    with pytest.raises(PayloadTooLarge, match="input 'x': 4 elements exceed the limit of 3"):
        decode([binary_input("BYTES", [4], 16)], bytes_element(b"") * 4, Limits(max_tensor_elements=3))


def test_result_with_lying_sizes_is_refused_on_the_client_side_too() -> None:
    header = orjson.dumps(
        {
            "model_name": "m",
            "model_version": "1",
            "outputs": [{"name": "y", "datatype": "FP32", "shape": [2], "parameters": {"binary_data_size": 8}}],
        }
    )
    with pytest.raises(InvalidInput, match="output 'y': binary_data_size is 8 bytes but only 4"):
        decode_infer_result(header + b"\x00" * 4, len(header))


# ---- encoding -----------------------------------------------------------------------------------


def test_tensors_are_written_little_endian_row_major() -> None:
    array = np.arange(6, dtype=">u2").reshape(2, 3).T
    assert tensor_to_binary(array, "UINT16") == struct.pack("<6H", 0, 3, 1, 4, 2, 5)
    assert tensor_to_binary(np.array([True, False]), "BOOL") == b"\x01\x00"


def test_bytes_tensor_serialization() -> None:
    array = np.array([[b"ab", "é"], [b"", 5]], dtype=object)
    blob = serialize_bytes_tensor(array)
    assert blob == bytes_element(b"ab") + bytes_element("é".encode()) + bytes_element(b"") + bytes_element(b"5")
    back = deserialize_bytes_tensor("output 'y'", memoryview(blob), 4)
    assert back.tolist() == [b"ab", "é".encode(), b"", b"5"]
