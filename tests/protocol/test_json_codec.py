from __future__ import annotations

import math

import numpy as np
import orjson
import pytest
import tritonclient.http as triton

from leanserve.errors import InvalidInput, PayloadTooLarge
from leanserve.protocol import InferOutput, InferResult, Limits, decode_infer_request, encode_infer_result, json_codec
from leanserve.protocol.json_codec import plain_tensor_from_json, tensor_from_json, tensor_to_json


def decode_input(datatype: str, shape: list[int], data: object, limits: Limits | None = None) -> np.ndarray:
    body = orjson.dumps({"inputs": [{"name": "x", "datatype": datatype, "shape": shape, "data": data}]})
    return decode_infer_request(body, None, limits or Limits()).inputs[0].data


def assert_invalid(message: str, datatype: str, shape: list[int], data: object) -> None:
    with pytest.raises(InvalidInput) as caught:
        decode_input(datatype, shape, data)
    assert caught.value.message.startswith("input 'x': ")
    assert message in caught.value.message


def test_decodes_each_kind() -> None:
    assert decode_input("BOOL", [3], [True, False, True]).tolist() == [True, False, True]
    uint64 = decode_input("UINT64", [2], [0, 2**64 - 1])
    assert uint64.dtype == np.uint64 and uint64.tolist() == [0, 2**64 - 1]
    int8 = decode_input("INT8", [2], [-128, 127])
    assert int8.dtype == np.int8 and int8.tolist() == [-128, 127]
    fp16 = decode_input("FP16", [3], [1, 0.5, 65504.0])
    assert fp16.dtype == np.float16 and fp16.tolist() == [1.0, 0.5, 65504.0]
    text = decode_input("BYTES", [2], ["héllo", ""])
    assert text.dtype == object and text.tolist() == ["héllo".encode(), b""]


def test_nested_data_matching_the_shape_is_flattened_row_major() -> None:
    array = decode_input("INT32", [2, 3], [[1, 2, 3], [4, 5, 6]])
    assert array.shape == (2, 3) and array.tolist() == [[1, 2, 3], [4, 5, 6]]
    assert decode_input("INT32", [2, 3], [1, 2, 3, 4, 5, 6]).tolist() == [[1, 2, 3], [4, 5, 6]]
    assert decode_input("FP32", [2, 0], [[], []]).shape == (2, 0)
    assert decode_input("FP32", [0, 4], []).shape == (0, 4)
    assert decode_input("FP64", [], [2.5]).shape == ()


@pytest.mark.parametrize(
    ("shape", "data", "message"),
    [
        ([2, 3], [1, 2, 3, 4, 5], "shape [2, 3] needs 6 elements, got 5"),
        ([2], [1, 2, 3], "shape [2] needs 2 elements, got 3"),
        ([2, 2], [[1, 2], [3]], "nested data does not match shape [2, 2]: expected arrays of 2 at depth 1"),
        ([2, 2], [[1, 2], 3], "nested data does not match shape [2, 2]"),
        ([3, 2], [[1, 2, 3], [4, 5, 6]], "nested data does not match shape [3, 2]"),
        ([2], [[1], [2]], "data is ragged or nested deeper than its shape (element 0 is an array)"),
        ([2, 2], [[1, 2]], "nested data does not match shape [2, 2]: expected arrays of 2 at depth 0"),
        ([4], [1, [2], 3, 4], "data is ragged or nested deeper than its shape (element 1 is an array)"),
        ([2], [[[1]], [[2]]], "ragged or nested deeper"),
        ([1], 5, "'data' must be a JSON array, got integer"),
        ([1], {"a": 1}, "'data' must be a JSON array, got object"),
    ],
)
def test_data_that_does_not_fit_the_shape(shape: list[int], data: object, message: str) -> None:
    assert_invalid(message, "INT32", shape, data)


@pytest.mark.parametrize(
    ("datatype", "data", "message"),
    [
        ("FP32", [1.0, "2.5"], "FP32 data cannot hold string '2.5' (element 1)"),
        ("FP32", [True], "FP32 data cannot hold boolean True (element 0)"),
        ("INT32", [1, 1.5], "INT32 data cannot hold number 1.5 (element 1)"),
        ("INT64", [1.0], "INT64 data cannot hold number 1.0"),
        ("INT32", [None], "INT32 data cannot hold null"),
        ("UINT8", [False], "UINT8 data cannot hold boolean"),
        ("BOOL", [1, 0], "BOOL data cannot hold integer 1"),
        ("BYTES", ["a", 1], "BYTES data cannot hold integer 1 (element 1)"),
        ("BYTES", [None], "BYTES data cannot hold null"),
        ("FP64", [{"v": 1}], "FP64 data cannot hold object"),
    ],
)
def test_values_of_the_wrong_kind_are_not_cast(datatype: str, data: list[object], message: str) -> None:
    assert_invalid(message, datatype, [len(data)], data)


@pytest.mark.parametrize(
    ("datatype", "value", "message"),
    [
        ("UINT8", 300, "300 (element 1) is out of range for UINT8 (0 to 255)"),
        ("UINT8", -1, "-1 (element 1) is out of range for UINT8"),
        ("INT8", -129, "out of range for INT8 (-128 to 127)"),
        ("UINT16", 65536, "out of range for UINT16"),
        ("INT32", 2**31, "out of range for INT32"),
        ("UINT32", -5, "out of range for UINT32"),
        ("INT64", 2**63, "out of range for INT64"),
        ("UINT64", -1, "out of range for UINT64"),
        ("FP16", 70000.0, "70000.0 (element 1) is out of range for FP16"),
        ("FP32", 1e39, "out of range for FP32"),
        ("FP32", -1e39, "out of range for FP32"),
    ],
)
def test_values_out_of_range_are_errors(datatype: str, value: float, message: str) -> None:
    assert_invalid(message, datatype, [2], [0, value])


def test_integers_beyond_64_bits_are_refused() -> None:
    # orjson reads them as floats, which no integer datatype takes.
    with pytest.raises(InvalidInput, match=r"UINT64 data cannot hold number 1\.8446744073709552e"):
        decode_infer_request(
            b'{"inputs": [{"name": "x", "datatype": "UINT64", "shape": [1], "data": [18446744073709551616]}]}',
            None,
            Limits(),
        )


def test_out_of_range_reports_no_warning(recwarn: pytest.WarningsRecorder) -> None:
    with pytest.raises(InvalidInput):
        decode_input("FP32", [1], [1e39])
    assert not [w for w in recwarn if issubclass(w.category, RuntimeWarning)]


def test_null_in_float_data_is_nan() -> None:
    array = decode_input("FP32", [2], [1.0, None])
    assert array[0] == 1.0 and np.isnan(array[1])


def test_non_finite_outputs_are_written_as_null_and_tritonclient_reads_nan() -> None:
    values = np.array([np.nan, np.inf, -np.inf, 1.0], dtype=np.float32)
    body, header_length = encode_infer_result(InferResult("m", "1", [InferOutput("y", values)]))
    assert orjson.loads(body)["outputs"][0]["data"] == [None, None, None, 1.0]
    theirs = triton.InferResult.from_response_body(body, header_length=header_length).as_numpy("y")
    assert np.isnan(theirs[:3]).all() and theirs[3] == 1.0


def test_element_limit_applies_after_the_data_matches_the_shape() -> None:
    with pytest.raises(PayloadTooLarge, match="input 'x': 4 elements exceed the limit of 3"):
        decode_input("INT32", [4], [1, 2, 3, 4], Limits(max_tensor_elements=3))
    # A lying shape is reported as the mismatch it is, however large.
    with pytest.raises(InvalidInput, match=f"needs {2**64} elements, got 1"):
        decode_input("INT32", [2**32, 2**32], [1], Limits(max_tensor_elements=3))


def test_huge_declared_shape_allocates_nothing() -> None:
    with pytest.raises(InvalidInput, match="got 0"):
        tensor_from_json("input 'x'", "FP64", (2**62, 2**62), math.prod((2**62, 2**62)), [], 10**9)


def test_to_json_handles_byte_order_and_layout() -> None:
    big_endian = np.arange(4, dtype=">i4").reshape(2, 2).T
    data = tensor_to_json("output 'y'", big_endian, "INT32")
    assert orjson.dumps(data, option=orjson.OPT_SERIALIZE_NUMPY) == b"[0,2,1,3]"


def test_bytes_that_are_not_utf8_cannot_go_as_json() -> None:
    output = InferOutput("y", np.array([b"\xff"], dtype=object))
    with pytest.raises(InvalidInput, match="output 'y': holds bytes that are not UTF-8") as caught:
        encode_infer_result(InferResult("m", "1", [output]))
    assert caught.value.hint is not None and "binary_data" in caught.value.hint


PLAIN_CASES = [
    ("FP32", [2, 2], [1, 2.5, -3, 4e-3]),
    ("FP32", [1], [3.5e38]),  # overflows float32: the long way says so
    ("FP32", [1], [-3.5e38]),
    ("FP32", [4096], [0.5] * 4095 + [3.5e38]),  # a large tensor is searched another way: the same answer
    ("FP32", [4096], [-3.5e38] + [0.5] * 4095),
    ("FP32", [64, 64], [0.25 * i for i in range(4096)]),
    ("FP32", [1], [None]),  # null is NaN, by the long way
    ("FP32", [2], [1.0, True]),
    ("FP32", [2], [1.0, "2"]),
    ("FP32", [2, 1], [[1.0], [2.0]]),  # nested
    ("FP32", [3], [1.0, 2.0]),  # too few
    ("FP32", [0, 4], []),
    ("FP64", [2], [1e300, -5]),
    ("INT64", [3], [1, -(2**63), 2**63 - 1]),
    ("INT64", [2], [1, 2.0]),
    ("INT32", [1], [2**31]),
    ("INT8", [2], [-128, 127]),
    ("UINT8", [1], [256]),
    ("UINT64", [2], [0, 2**64 - 1]),
    ("UINT64", [1], [-1]),
    ("UINT16", [1], [False]),
    ("FP16", [1], [1.5]),  # no fast path: the long way
    ("BOOL", [1], [True]),
]


@pytest.mark.parametrize(("datatype", "shape", "data"), PLAIN_CASES)
def test_the_plain_path_agrees_with_the_general_one(
    datatype: str, shape: list[int], data: list[object], monkeypatch: pytest.MonkeyPatch
) -> None:
    count = math.prod(shape)
    plain = plain_tensor_from_json(datatype, tuple(shape), count, data, 1 << 20)
    monkeypatch.setattr(json_codec, "plain_tensor_from_json", lambda *args: None)  # the general path alone
    try:
        general = tensor_from_json("x", datatype, tuple(shape), count, data, 1 << 20)
    except InvalidInput:
        assert plain is None  # the plain path never takes what the general one refuses
        return
    if plain is not None:
        assert plain.dtype == general.dtype and plain.shape == general.shape
        np.testing.assert_array_equal(plain, general)
    if not any(type(x) is bool for x in data):  # what the codec passes when the body has no true or false
        unchecked = plain_tensor_from_json(datatype, tuple(shape), count, data, 1 << 20, bools=False)
        assert (unchecked is None) == (plain is None)
        if unchecked is not None:
            np.testing.assert_array_equal(unchecked, general)


def test_the_plain_path_takes_the_common_request() -> None:
    assert plain_tensor_from_json("FP32", (1, 3), 3, [0.5, 1, -2.0], 100) is not None
    assert plain_tensor_from_json("INT64", (2,), 2, [7, 8], 100) is not None
    assert plain_tensor_from_json("FP32", (1, 3), 3, [0.5, 1, -2.0], 2) is None  # over the element limit
