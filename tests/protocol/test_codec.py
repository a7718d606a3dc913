from __future__ import annotations

import math
from typing import Literal

import numpy as np
import orjson
import pytest
import tritonclient.http as triton
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

import leanserve.protocol
from leanserve.errors import InvalidInput, PayloadTooLarge, UsageError
from leanserve.protocol import (
    DATATYPES,
    InferInput,
    InferOutput,
    InferRequest,
    InferRequestedOutput,
    InferResult,
    Limits,
    codec,
    decode_infer_request,
    decode_infer_result,
    encode_error,
    encode_infer_request,
    encode_infer_result,
    numpy_dtype,
)

FLOAT_WIDTHS: dict[str, Literal[16, 32, 64]] = {"FP16": 16, "FP32": 32, "FP64": 64}
SHAPES = hnp.array_shapes(min_dims=0, max_dims=3, min_side=0, max_side=4)


def _object_array(items: list[bytes], shape: tuple[int, ...]) -> np.ndarray:
    array = np.empty(len(items), dtype=object)
    array[:] = items
    return array.reshape(shape)


def tensors(datatype: str, json_safe: bool) -> st.SearchStrategy[np.ndarray]:
    """Arrays of a datatype; ``json_safe`` leaves out what JSON cannot carry (NaN, inf, non-UTF-8)."""
    if datatype == "BYTES":
        element = st.text(max_size=6).map(str.encode) if json_safe else st.binary(max_size=6)
        return SHAPES.flatmap(
            lambda shape: st.lists(element, min_size=math.prod(shape), max_size=math.prod(shape)).map(
                lambda items: _object_array(items, shape)
            )
        )
    dtype = numpy_dtype(datatype)
    if dtype.kind == "f" and json_safe:
        floats = st.floats(width=FLOAT_WIDTHS[datatype], allow_nan=False, allow_infinity=False)
        return hnp.arrays(dtype, SHAPES, elements=floats)
    return hnp.arrays(dtype, SHAPES)


def assert_same(actual: np.ndarray, expected: np.ndarray) -> None:
    assert actual.shape == expected.shape
    assert actual.dtype == expected.dtype
    if expected.dtype == object:
        assert actual.ravel().tolist() == expected.ravel().tolist()
    else:  # bit for bit: keeps -0.0 apart from 0.0 and compares NaN payloads
        assert actual.tobytes() == expected.tobytes()


def triton_body(inputs: list[triton.InferInput], **kwargs: object) -> tuple[bytes, int | None]:
    body, json_size = triton.InferenceServerClient.generate_request_body(inputs, **kwargs)
    return body, json_size


# ---- round trips --------------------------------------------------------------------------------


@pytest.mark.parametrize("binary", [False, True], ids=["json", "binary"])
@pytest.mark.parametrize("datatype", DATATYPES)
@settings(max_examples=60, deadline=None)
@given(data=st.data())
def test_request_round_trip(datatype: str, binary: bool, data: st.DataObject) -> None:
    array = data.draw(tensors(datatype, json_safe=not binary))
    request = InferRequest([InferInput("x", array.shape, datatype, array)], id="r-1")
    body, header_length = encode_infer_request(request, binary=binary)
    decoded = decode_infer_request(body, header_length, Limits())
    (inp,) = decoded.inputs
    assert (inp.name, inp.datatype, inp.shape, decoded.id) == ("x", datatype, array.shape, "r-1")
    assert_same(inp.data, array)
    assert inp.parameters == {}


@pytest.mark.parametrize("binary", [False, True], ids=["json", "binary"])
@pytest.mark.parametrize("datatype", DATATYPES)
@settings(max_examples=60, deadline=None)
@given(data=st.data())
def test_result_round_trip_and_tritonclient_reads_it(datatype: str, binary: bool, data: st.DataObject) -> None:
    array = data.draw(tensors(datatype, json_safe=not binary))
    result = InferResult("m", "1", [InferOutput("y", array, binary_data=binary)], id="r-1")
    body, header_length = encode_infer_result(result)
    assert (header_length is not None) == binary

    decoded = decode_infer_result(body, header_length)
    assert (decoded.model_name, decoded.model_version, decoded.id) == ("m", "1", "r-1")
    assert_same(decoded.outputs[0].data, array)
    assert decoded.outputs[0].binary_data == binary

    theirs = triton.InferResult.from_response_body(body, header_length=header_length).as_numpy("y")
    assert theirs.shape == array.shape
    if datatype == "BYTES" and not binary:  # tritonclient returns JSON strings as str
        assert [s.encode() for s in theirs.ravel().tolist()] == array.ravel().tolist()
    else:
        assert_same(theirs, array)


@pytest.mark.parametrize("binary", [False, True], ids=["json", "binary"])
@pytest.mark.parametrize("datatype", DATATYPES)
@settings(max_examples=60, deadline=None)
@given(data=st.data())
def test_decodes_tritonclient_requests_exactly(datatype: str, binary: bool, data: st.DataObject) -> None:
    array = data.draw(tensors(datatype, json_safe=not binary))
    theirs = triton.InferInput("x", list(array.shape), datatype)
    theirs.set_data_from_numpy(array, binary_data=binary)
    body, json_size = triton_body([theirs])
    request = decode_infer_request(body, json_size, Limits())
    (inp,) = request.inputs
    assert (inp.name, inp.datatype, inp.shape, inp.parameters) == ("x", datatype, array.shape, {})
    assert_same(inp.data, array)


def test_tritonclient_request_options_survive() -> None:
    a = np.arange(6, dtype=np.float32).reshape(2, 3)
    b = np.array([[b"hi"], [b"there"]], dtype=object)
    inputs = [triton.InferInput("a", [2, 3], "FP32"), triton.InferInput("b", [2, 1], "BYTES")]
    inputs[0].set_data_from_numpy(a, binary_data=True)
    inputs[1].set_data_from_numpy(b, binary_data=False)
    outputs = [
        triton.InferRequestedOutput("p", binary_data=True),
        triton.InferRequestedOutput("q", binary_data=False),
    ]
    body, json_size = triton_body(
        inputs, outputs=outputs, request_id="abc", priority=2, parameters={"temperature": 0.5}
    )
    request = decode_infer_request(body, json_size, Limits())
    assert request.id == "abc"
    assert request.parameters == {"priority": 2, "temperature": 0.5}
    assert request.binary_data_output is False
    assert_same(request.inputs[0].data, a)
    assert_same(request.inputs[1].data, b)
    assert request.outputs == [InferRequestedOutput("p", True), InferRequestedOutput("q", False)]


def test_tritonclient_without_outputs_asks_for_binary_outputs() -> None:
    inp = triton.InferInput("a", [1], "INT64")
    inp.set_data_from_numpy(np.array([7], dtype=np.int64), binary_data=False)
    body, json_size = triton_body([inp])
    request = decode_infer_request(body, json_size, Limits())
    assert request.outputs is None
    assert request.binary_data_output is True
    assert request.parameters == {}


# ---- what the server writes ---------------------------------------------------------------------


def test_json_result_layout() -> None:
    result = InferResult("m", "2", [InferOutput("y", np.array([[1.5, 2.0]], dtype=np.float32))])
    body, header_length = encode_infer_result(result)
    assert header_length is None
    assert orjson.loads(body) == {
        "model_name": "m",
        "model_version": "2",
        "outputs": [{"name": "y", "datatype": "FP32", "shape": [1, 2], "data": [1.5, 2.0]}],
    }


def test_mixed_result_puts_binary_after_the_header_in_output_order() -> None:
    outputs = [
        InferOutput("a", np.array([1, 2], dtype=np.int32), binary_data=True),
        InferOutput("b", np.array([True]), binary_data=False),
        InferOutput("c", np.array([b"xy"], dtype=object), binary_data=True, parameters={"k": 1}),
    ]
    body, header_length = encode_infer_result(InferResult("m", "1", outputs, id="i", parameters={"p": "q"}))
    assert header_length is not None
    header = orjson.loads(body[:header_length])
    assert header["id"] == "i" and header["parameters"] == {"p": "q"}
    assert header["outputs"][0]["parameters"] == {"binary_data_size": 8}
    assert header["outputs"][1]["data"] == [True]
    assert header["outputs"][2]["parameters"] == {"k": 1, "binary_data_size": 6}
    assert body[header_length:] == b"\x01\x00\x00\x00\x02\x00\x00\x00" + b"\x02\x00\x00\x00xy"
    theirs = triton.InferResult.from_response_body(body, header_length=header_length)
    assert theirs.as_numpy("c").tolist() == [b"xy"]


def test_str_arrays_are_sent_as_bytes() -> None:
    result = InferResult("m", "1", [InferOutput("s", np.array(["é", "b"]), binary_data=True)])
    body, header_length = encode_infer_result(result)
    assert decode_infer_result(body, header_length).outputs[0].data.tolist() == ["é".encode(), b"b"]


def test_encode_error() -> None:
    assert orjson.loads(encode_error('bad "x"')) == {"error": 'bad "x"'}


# ---- the request document -----------------------------------------------------------------------


def _decode(doc: object, limits: Limits | None = None) -> InferRequest:
    return decode_infer_request(orjson.dumps(doc), None, limits or Limits())


def _input(**overrides: object) -> dict[str, object]:
    return {"name": "x", "datatype": "INT32", "shape": [2], "data": [1, 2], **overrides}


def test_parameters_pass_through_without_binary_keys() -> None:
    doc = {
        "id": "7",
        "parameters": {"binary_data_output": True, "user": {"a": [1]}},
        "inputs": [_input(parameters={"note": "n"})],
        "outputs": [{"name": "y"}, {"name": "z", "parameters": {"binary_data": False, "classification": 2}}],
    }
    request = _decode(doc)
    assert request.id == "7"
    assert request.parameters == {"user": {"a": [1]}}
    assert request.binary_data_output is True
    assert request.inputs[0].parameters == {"note": "n"}
    # An output without its own binary_data follows the request's binary_data_output.
    assert request.outputs == [
        InferRequestedOutput("y", True),
        InferRequestedOutput("z", False, {"classification": 2}),
    ]


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (b"", "request body is empty"),
        (b"{", "request is not valid JSON"),
        (b"[1]", "request must be a JSON object, got list"),
        (b"{}", "request needs an 'inputs' array"),
        (b'{"inputs": {}}', "request 'inputs' must be an array, got dict"),
        (b'{"inputs": [1]}', "inputs[0] must be a JSON object"),
        (b'{"inputs": [{"datatype": "FP32"}]}', "inputs[0] needs a 'name' string"),
        (b'{"inputs": [{"name": "x", "shape": [1], "data": [1]}]}', "input 'x': needs a 'datatype'"),
        (
            b'{"inputs": [{"name": "x", "datatype": "FP8", "shape": [1], "data": [1]}]}',
            "input 'x': unknown datatype 'FP8'",
        ),
        (
            b'{"inputs": [{"name": "x", "datatype": ["FP32"], "shape": [1], "data": [1]}]}',
            "input 'x': unknown datatype ['FP32']",
        ),
        (
            b'{"inputs": [{"name": "x", "datatype": {}, "shape": [1], "data": [1]}]}',
            "input 'x': unknown datatype {}",
        ),
        (b'{"inputs": [{"name": "x", "datatype": "FP32", "data": [1]}]}', "input 'x': 'shape' must be"),
        (
            b'{"inputs": [{"name": "x", "datatype": "FP32", "shape": [-1], "data": [1]}]}',
            "input 'x': 'shape' must be",
        ),
        (
            b'{"inputs": [{"name": "x", "datatype": "FP32", "shape": [1.0], "data": [1]}]}',
            "input 'x': 'shape' must be",
        ),
        (
            b'{"inputs": [{"name": "x", "datatype": "FP32", "shape": [true], "data": [1]}]}',
            "input 'x': 'shape' must be",
        ),
        (
            b'{"inputs": [{"name": "x", "datatype": "FP32", "shape": [1]}]}',
            "input 'x': has neither 'data' nor parameters.binary_data_size",
        ),
        (
            b'{"inputs": [{"name": "x", "datatype": "FP32", "shape": [1], "data": [1], "parameters": 3}]}',
            "input 'x': 'parameters' must be a JSON object",
        ),
        (b'{"id": 5, "inputs": []}', "request 'id' must be a string"),
        (b'{"inputs": [], "outputs": {}}', "request 'outputs' must be an array"),
        (b'{"inputs": [], "outputs": [{"nam": "y"}]}', "outputs[0] must be an object with a 'name' string"),
        (
            b'{"inputs": [], "outputs": [{"name": "y", "parameters": {"binary_data": 1}}]}',
            "output 'y': parameters.binary_data must be true or false",
        ),
        (
            b'{"inputs": [], "parameters": {"binary_data_output": "yes"}}',
            "request: parameters.binary_data_output must be true or false",
        ),
    ],
)
def test_malformed_requests_say_what_and_where(body: bytes, message: str) -> None:
    with pytest.raises(InvalidInput) as caught:
        decode_infer_request(body, None, Limits())
    assert message in caught.value.message


def test_invalid_utf8_is_malformed_json() -> None:
    with pytest.raises(InvalidInput, match="not valid JSON"):
        decode_infer_request(b'{"inputs": [], "id": "\xff"}', None, Limits())


def test_body_over_the_limit_is_too_large() -> None:
    body = orjson.dumps({"inputs": [_input()]})
    with pytest.raises(PayloadTooLarge, match=f"{len(body)} bytes"):
        decode_infer_request(body, None, Limits(max_body_bytes=len(body) - 1))
    decode_infer_request(body, None, Limits(max_body_bytes=len(body)))


def test_too_many_inputs_and_outputs() -> None:
    with pytest.raises(InvalidInput, match="3 inputs, more than the limit of 2"):
        _decode({"inputs": [_input(name=n) for n in "abc"]}, Limits(max_inputs=2))
    with pytest.raises(InvalidInput, match="3 outputs, more than the limit of 2"):
        _decode({"inputs": [], "outputs": [{"name": n} for n in "abc"]}, Limits(max_inputs=2))


def test_parameters_nested_past_the_depth_limit() -> None:
    deep: object = 1
    for _ in range(5):
        deep = {"k": deep}
    _decode({"inputs": [_input(parameters=deep)]}, Limits(max_json_depth=5))
    with pytest.raises(InvalidInput, match=r"input 'x': 'parameters' nest deeper than 4 levels"):
        _decode({"inputs": [_input(parameters=deep)]}, Limits(max_json_depth=4))
    with pytest.raises(InvalidInput, match="request: 'parameters' nest deeper"):
        _decode({"inputs": [], "parameters": {"a": [[[[[1]]]]]}}, Limits(max_json_depth=4))


def test_json_nested_past_what_the_parser_takes_is_malformed() -> None:
    body = b'{"inputs": [], "parameters": {"a": ' + b"[" * 5000 + b"]" * 5000 + b"}}"
    with pytest.raises(InvalidInput, match="not valid JSON"):
        decode_infer_request(body, None, Limits())


def test_client_refuses_a_datatype_that_does_not_match_the_array() -> None:
    with pytest.raises(UsageError, match="input 'x': datatype is FP32 but the array holds float64"):
        InferInput("x", (1,), "FP32", np.array([1.0]))
    request = InferRequest([InferInput("x", (1,), "FP32")])
    with pytest.raises(UsageError, match="input 'x' has no data"):
        encode_infer_request(request, binary=False)


def test_public_names_are_sorted_and_importable() -> None:
    names = leanserve.protocol.__all__
    assert names == sorted(names)
    for name in names:
        assert getattr(leanserve.protocol, name) is not None


@pytest.mark.parametrize(
    "result",
    [
        InferResult("tiny", "1", [InferOutput("y", np.arange(6, dtype=np.float32).reshape(2, 3))]),
        InferResult('we"ird', "12", [InferOutput("a", np.array([[np.nan, 1.5]])), InferOutput("b", np.int64([7]))]),
        InferResult("m", "1", [InferOutput("y", np.zeros((0, 4), np.float32))]),
        InferResult("m", "1", [InferOutput("y", np.arange(6, dtype=np.int32).reshape(2, 3).T)]),  # not contiguous
        InferResult("m", "1", [InferOutput("y", np.arange(3, dtype=">f4"))]),  # not native: the general way
        InferResult("m", "1", [InferOutput("y", np.array([b"x"], dtype=object))]),
        InferResult("m", "1", [InferOutput("y", np.ones(2, np.float32), binary_data=True)]),
        InferResult("m", "1", [InferOutput("y", np.ones(2, np.float32), parameters={"k": 1})]),
        InferResult("m", "1", [InferOutput("y", np.ones(2, np.float32))], id="r1"),
        InferResult("m", "1", [InferOutput("y", np.ones(2, np.float32))], parameters={"p": True}),
        InferResult(
            "ab", "2", [InferOutput("y", np.ones(2, np.float32))], id='q"\u00e9', parameters={"leanserve_arm": "m:2"}
        ),
        InferResult("m", "1", [InferOutput("y", np.ones(1, np.float32))], parameters={"n": np.int64(3), "l": [1.5]}),
        InferResult("m", "1", [InferOutput("y", np.ones(2, np.float32), binary_data=True)], parameters={"p": 1}),
        InferResult("m", "1", []),
    ],
)
def test_the_common_answer_is_encoded_as_the_general_encoder_would(
    result: InferResult, monkeypatch: pytest.MonkeyPatch
) -> None:
    fast = encode_infer_result(result)
    monkeypatch.setattr(codec, "_plain_result", lambda result: None)
    assert fast == encode_infer_result(result)


def test_an_answer_with_an_id_and_parameters_takes_the_fast_way() -> None:
    # An experiment's answers name their arm in a parameter (and carry an id when feedback is
    # expected): the common answer of an alias, encoded the fast way like a direct one.
    outputs = [InferOutput("y", np.ones(2, np.float32))]
    assert codec._plain_result(InferResult("ab", "1", outputs, id="r", parameters={"leanserve_arm": "m:1"}))
    assert codec._plain_result(InferResult("ab", "1", outputs, parameters={"leanserve_arm": "m:1"}))


@pytest.mark.parametrize("value", [b"true", b"false"])
def test_a_json_bool_in_numeric_data_is_refused_on_the_common_path_too(value: bytes) -> None:
    body = b'{"inputs": [{"name": "x", "datatype": "FP32", "shape": [1, 2], "data": [0.5, %s]}]}' % value
    with pytest.raises(InvalidInput, match="cannot hold boolean"):
        decode_infer_request(body, None, Limits())


@pytest.mark.parametrize(
    "body",
    [
        b'{"inputs": [{"name": "x", "datatype": "FP32", "shape": [2, 2], "data": [1, 2.5, -3, 0.25]}]}',
        b'{"inputs": [{"name": "a", "datatype": "INT64", "shape": [1, 3], "data": [1, 2, 3]},'
        b' {"name": "b", "datatype": "UINT8", "shape": [3], "data": [0, 1, 255]}]}',
        b'{"inputs": [{"name": "x", "datatype": "FP32", "shape": [0, 4], "data": []}]}',
        b'{"inputs": [{"name": "x", "datatype": "FP32", "shape": [1], "data": [null]}]}',  # not plain
        b'{"inputs": [{"name": "x", "datatype": "FP16", "shape": [1], "data": [0.5]}]}',  # not plain
        # Past a few kilobytes, with an l in the name: the letters t and f are counted.
        b'{"inputs": [{"name": "pixel_values", "datatype": "FP32", "shape": [1, 3000], "data": [%s]}]}'
        % b",".join(b"%d.25" % i for i in range(3000)),
    ],
)
def test_the_common_request_decodes_as_the_general_decoder_would(body: bytes, monkeypatch: pytest.MonkeyPatch) -> None:
    fast = decode_infer_request(body, None, Limits())
    monkeypatch.setattr(codec, "_plain_request", lambda *args: None)
    general = decode_infer_request(body, None, Limits())
    assert (fast.outputs, fast.id, fast.parameters, fast.binary_data_output) == (None, None, {}, False)
    assert (general.outputs, general.id, general.parameters, general.binary_data_output) == (None, None, {}, False)
    assert len(fast.inputs) == len(general.inputs)
    for a, b in zip(fast.inputs, general.inputs, strict=True):
        assert (a.name, a.shape, a.datatype, a.parameters) == (b.name, b.shape, b.datatype, b.parameters)
        assert a.data.dtype == b.data.dtype and a.data.shape == b.data.shape
        np.testing.assert_array_equal(a.data, b.data)


@pytest.mark.parametrize(
    ("body", "may"),
    [
        # Names with an l or an r, which the one-byte searches cannot clear: the letters t and f
        # of the document's own strings account for every one in the text.
        (b'{"inputs": [{"name": "pixel_values", "datatype": "FP32", "shape": [1, 2], "data": [0.5, 1e3]}]}', False),
        (
            b'{"inputs":[{"name":"left","datatype":"INT64","shape":[2],"data":[1,2]},'
            b'{"name":"fifth","datatype":"FP32","shape":[1],"data":[2.5]}]}',
            False,
        ),
        (b'{"inputs": [{"name": "pixel_values", "datatype": "FP32", "shape": [1, 2], "data": [0.5, true]}]}', True),
        (b'{"inputs": [{"name": "pixel_values", "datatype": "FP32", "shape": [1, 2], "data": [false, 1]}]}', True),
        # An escape could hide a letter of a string from the count: the full check.
        (b'{"inputs": [{"name": "pixel_\\u0074", "datatype": "FP32", "shape": [1], "data": [true]}]}', True),
        (b'{"inputs": [{"name": "l", "datatype": "FP32", "shape": [1], "data": ["t"]}]}', True),
        (b'{"inputs": [{"name": "l", "datatype": "FP32", "shape": [1], "parameters": {}}]}', True),
    ],
)
def test_a_body_is_cleared_of_bools_only_when_its_strings_account_for_every_t_and_f(body: bytes, may: bool) -> None:
    assert codec._may_hold_bools(body, orjson.loads(body)["inputs"]) is may


@pytest.mark.parametrize("name", ["pixel_\\u0074", "pixel_values"])
def test_a_bool_in_a_large_body_is_still_refused(name: str) -> None:
    # Past a few kilobytes the letters are counted. With the escape, the string has a t the text
    # does not show, and the literal true adds one it does: counted alone, they would balance.
    data = b", ".join([b"0.5"] * 2000)
    body = b'{"inputs": [{"name": "%s", "datatype": "FP32", "shape": [1, 2001], "data": [%s, true]}]}' % (
        name.encode(),
        data,
    )
    assert len(body) > codec._COUNT_LETTERS_ABOVE
    with pytest.raises(InvalidInput, match="cannot hold boolean"):
        decode_infer_request(body, None, Limits())
