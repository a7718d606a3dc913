"""Inference requests and responses of the Open Inference Protocol over HTTP, to and from bytes.

The server side (:func:`decode_infer_request`, :func:`encode_infer_result`,
:func:`encode_error`) runs once per request and is kept lean; the client side
(:func:`encode_infer_request`, :func:`decode_infer_result`) serves tests and the benchmark
tools. Both speak JSON with Triton's binary tensor data extension, byte for byte as
tritonclient does. Whatever is malformed raises :class:`~leanserve.errors.InvalidInput`
naming where it is; limits raise :class:`~leanserve.errors.PayloadTooLarge`.
"""

from __future__ import annotations

import math
from typing import Any, Final

import numpy as np
import orjson

from ..errors import InvalidInput, PayloadTooLarge, UsageError
from .binary import BinaryReader, split_body, tensor_from_binary, tensor_to_binary
from .datatypes import DATATYPES, datatype_of
from .json_codec import plain_tensor_from_json, tensor_from_json, tensor_to_json
from .limits import Limits, check_bytes_elements, declared_elements
from .types import InferInput, InferOutput, InferRequest, InferRequestedOutput, InferResult, Parameters

_DATATYPES: Final = frozenset(DATATYPES)
_MAX_DIMS: Final = 32  # numpy 1.x's own limit, far beyond any model's
# The client side trusts the server it talks to as far as sizes go.
_UNLIMITED: Final = Limits(max_body_bytes=2**62, max_tensor_elements=2**62, max_inputs=2**62)
_DUMPS_OPTIONS: Final = orjson.OPT_SERIALIZE_NUMPY
_COUNT_LETTERS_ABOVE: Final = 4096  # bytes of JSON: see decode_infer_request


# ---- server side ------------------------------------------------------------------------------


def decode_infer_request(body: bytes, header_length: int | None, limits: Limits) -> InferRequest:
    """An inference request from an HTTP body; ``header_length`` is Inference-Header-Content-Length."""
    if len(body) > limits.max_body_bytes:
        raise PayloadTooLarge(
            f"request body has {len(body)} bytes, more than the limit of {limits.max_body_bytes}",
            hint="send fewer or smaller tensors per request",
        )
    header, binary = split_body(body, header_length)
    doc = _load_object(header, "request")
    raw_inputs = doc.get("inputs")
    if header_length is None and len(doc) == 1:
        # A JSON bool is the text true or false, so a body without an r and an l holds none. One-byte
        # searches (memchr), where one for b"true" scans at 0.6 ns a byte: the common request's keys
        # have neither letter; for one whose names have one, the letters t and f are counted, past
        # a few kilobytes (below, the pass over the elements' types costs less: 0.5 us for 64).
        bools = (header.find(b"r") >= 0 or header.find(b"l") >= 0) and (
            len(header) < _COUNT_LETTERS_ABOVE or _may_hold_bools(header, raw_inputs)
        )
        plain = _plain_request(raw_inputs, limits, bools)
        if plain is not None:
            return plain
    if type(raw_inputs) is not list:
        raise InvalidInput(
            "request needs an 'inputs' array"
            if raw_inputs is None
            else f"request 'inputs' must be an array, got {type(raw_inputs).__name__}",
            hint='send {"inputs": [{"name": ..., "datatype": ..., "shape": [...], "data": [...]}]}',
        )
    if len(raw_inputs) > limits.max_inputs:
        raise InvalidInput(f"request has {len(raw_inputs)} inputs, more than the limit of {limits.max_inputs}")
    reader = BinaryReader(binary)
    inputs = [_decode_tensor(index, raw, "input", reader, limits) for index, raw in enumerate(raw_inputs)]
    reader.finish()

    parameters = _parameters(doc.get("parameters"), "request", limits)
    binary_data_output = _flag(parameters.pop("binary_data_output", False), "request", "binary_data_output")
    raw_outputs = doc.get("outputs")
    outputs = None if raw_outputs is None else _decode_requested_outputs(raw_outputs, binary_data_output, limits)
    request_id = doc.get("id")
    if request_id is not None and type(request_id) is not str:
        raise InvalidInput(f"request 'id' must be a string, got {type(request_id).__name__}")
    return InferRequest(inputs, outputs, request_id, parameters, binary_data_output)


def _may_hold_bools(header: bytes, raw_inputs: object) -> bool:
    """Whether the JSON text of a plain request may hold a ``true`` or ``false``; False only when it cannot.

    For a body whose keys or input names have an r or an l (``pixel_values``), where the one-byte
    searches cannot tell. A number never holds a t or an f, so in a text without escapes every t
    and f outside a literal is in a string: when the document's own strings account for all of
    them, no ``true`` nor ``false`` is left. Two counts at memchr speed, against a pass over every
    element's type (a 150k-element image decoded in 10.9 ms, where it took 12.0). Anything
    unexpected answers True (the full check).
    """
    if type(raw_inputs) is not list or header.find(b"\\") >= 0:
        return True
    t, f = 1, 0  # the key "inputs"
    for raw in raw_inputs:
        if type(raw) is not dict or len(raw) != 4 or "shape" not in raw or "data" not in raw:
            return True
        name, datatype = raw.get("name"), raw.get("datatype")
        if type(name) is not str or type(datatype) is not str:
            return True
        t += 3 + name.count("t") + datatype.count("t")  # the keys "datatype" and "data"
        f += name.count("f") + datatype.count("f")
    return header.count(b"t") != t or header.count(b"f") != f


def _plain_request(raw_inputs: object, limits: Limits, bools: bool = True) -> InferRequest | None:
    """The common request, fast: only ``inputs``, each with exactly its name, datatype, shape and
    flat numeric data, all valid. None when it is anything else, and the general decoder decides.
    ``bools`` False: the body holds no JSON ``true`` or ``false`` (see :func:`plain_tensor_from_json`).
    """
    if type(raw_inputs) is not list or not 0 < len(raw_inputs) <= limits.max_inputs:
        return None
    inputs = []
    for raw in raw_inputs:
        if type(raw) is not dict or len(raw) != 4:
            return None
        name, datatype, shape = raw.get("name"), raw.get("datatype"), raw.get("shape")
        if type(name) is not str or not name or type(datatype) is not str or type(shape) is not list:
            return None
        if len(shape) > _MAX_DIMS:
            return None
        for dim in shape:
            if type(dim) is not int or dim < 0:
                return None
        dims = tuple(shape)
        count = math.prod(dims)
        if count == 0:  # an empty tensor (or a shape like [2**62, 0]): the general decoder's checks
            return None
        data = plain_tensor_from_json(datatype, dims, count, raw.get("data"), limits.max_tensor_elements, bools)
        if data is None:
            return None
        inputs.append(InferInput._decoded(name, dims, datatype, data, {}))
    return InferRequest(inputs)


def encode_infer_result(result: InferResult) -> tuple[bytes, int | None]:
    """The response body, and the JSON header's length when binary outputs follow it (else None)."""
    plain = _plain_result(result)
    if plain is not None:
        return plain, None
    doc: dict[str, Any] = {"model_name": result.model_name, "model_version": result.model_version}
    if result.id is not None:
        doc["id"] = result.id
    if result.parameters:
        doc["parameters"] = result.parameters
    blobs: list[bytes] = []
    doc["outputs"] = [
        _encode_tensor(
            f"output {out.name!r}",
            out.name,
            out.data,
            datatype_of(out.data),
            out.binary_data,
            out.parameters,
            blobs,
        )
        for out in result.outputs
    ]
    return _dump(doc, blobs)


# Pre-encoded pieces of the common answer (JSON outputs), per model version and per output: a
# model answers with the same few again and again. Bounded, so that a client cannot grow them
# (output names come from the model, but model names from many versions could). An id and
# parameters (an experiment's answer names its arm in them) are encoded per answer between them.
_RESULT_HEADS: dict[tuple[str, str], bytes] = {}
_OUTPUT_HEADS: dict[tuple[str, str], bytes] = {}
_MAX_HEADS = 1024


def _plain_result(result: InferResult) -> bytes | None:
    """The common answer, byte for byte what the general encoder writes; None when it is not that."""
    key = (result.model_name, result.model_version)
    head = _RESULT_HEADS.get(key)
    if head is None:
        if len(_RESULT_HEADS) >= _MAX_HEADS:
            _RESULT_HEADS.clear()
        head = _RESULT_HEADS[key] = orjson.dumps({"model_name": key[0], "model_version": key[1]})[:-1]
    parts = [head]
    # In the general encoder's order: model_name, model_version, id, parameters, outputs.
    if result.id is not None:
        parts += [b',"id":', orjson.dumps(result.id)]
    if result.parameters:
        parts += [b',"parameters":', orjson.dumps(result.parameters, option=_DUMPS_OPTIONS)]
    parts.append(b',"outputs":[')
    first = len(parts)
    for out in result.outputs:
        array = out.data
        datatype = datatype_of(array)
        if out.binary_data or out.parameters or datatype == "BYTES" or not array.dtype.isnative:
            return None
        name_key = (out.name, datatype)
        entry = _OUTPUT_HEADS.get(name_key)
        if entry is None:
            if len(_OUTPUT_HEADS) >= _MAX_HEADS:
                _OUTPUT_HEADS.clear()
            entry = _OUTPUT_HEADS[name_key] = orjson.dumps({"name": out.name, "datatype": datatype})[:-1] + b',"shape":'
        parts += [
            entry if len(parts) == first else b"," + entry,
            orjson.dumps(array.shape),
            b',"data":',
            orjson.dumps(array.ravel(), option=_DUMPS_OPTIONS),
            b"}",
        ]
    parts.append(b"]}")
    return b"".join(parts)


def encode_error(message: str) -> bytes:
    return orjson.dumps({"error": message})


# ---- client side ------------------------------------------------------------------------------


def encode_infer_request(request: InferRequest, binary: bool) -> tuple[bytes, int | None]:
    """A request body as tritonclient would send it, with every input binary or every one JSON."""
    doc: dict[str, Any] = {}
    if request.id is not None:
        doc["id"] = request.id
    parameters = dict(request.parameters)
    if request.binary_data_output:
        parameters["binary_data_output"] = True
    if parameters:
        doc["parameters"] = parameters
    for inp in request.inputs:
        if datatype_of(inp.data) != inp.datatype:
            raise UsageError(f"input {inp.name!r}: datatype is {inp.datatype} but the array holds {inp.data.dtype}")
    blobs: list[bytes] = []
    doc["inputs"] = [
        _encode_tensor(f"input {inp.name!r}", inp.name, inp.data, inp.datatype, binary, inp.parameters, blobs)
        for inp in request.inputs
    ]
    if request.outputs is not None:
        doc["outputs"] = [
            {"name": out.name, "parameters": {**out.parameters, "binary_data": out.binary_data}}
            for out in request.outputs
        ]
    return _dump(doc, blobs)


def decode_infer_result(body: bytes, header_length: int | None) -> InferResult:
    """A response body as the server sent it (the client side of :func:`encode_infer_result`)."""
    header, binary = split_body(body, header_length)
    doc = _load_object(header, "response")
    raw_outputs = doc.get("outputs")
    if type(raw_outputs) is not list:
        raise InvalidInput("response needs an 'outputs' array")
    reader = BinaryReader(binary)
    outputs = []
    for index, raw in enumerate(raw_outputs):
        # Read before decoding, which pops the key from the parameters it keeps.
        is_binary = (
            type(raw) is dict and type(raw.get("parameters")) is dict and ("binary_data_size" in raw["parameters"])
        )
        tensor = _decode_tensor(index, raw, "output", reader, _UNLIMITED)
        outputs.append(InferOutput(tensor.name, tensor.data, is_binary, tensor.parameters))
    reader.finish()
    return InferResult(
        model_name=str(doc.get("model_name", "")),
        model_version=str(doc.get("model_version", "")),
        outputs=outputs,
        id=doc.get("id"),
        parameters=_parameters(doc.get("parameters"), "response", _UNLIMITED),
    )


# ---- shared -----------------------------------------------------------------------------------


def _load_object(header: bytes, what: str) -> dict[str, Any]:
    if not header:
        raise InvalidInput(f"{what} body is empty", hint="send a JSON object")
    try:
        doc = orjson.loads(header)
    except orjson.JSONDecodeError as error:
        raise InvalidInput(f"{what} is not valid JSON: {error}") from None
    if type(doc) is not dict:
        raise InvalidInput(f"{what} must be a JSON object, got {type(doc).__name__}")
    return doc


def _decode_tensor(index: int, raw: object, kind: str, reader: BinaryReader, limits: Limits) -> InferInput:
    """One entry of ``inputs`` (or of a response's ``outputs``), data decoded."""
    if type(raw) is not dict:
        raise InvalidInput(f"{kind}s[{index}] must be a JSON object, got {type(raw).__name__}")
    name = raw.get("name")
    if type(name) is not str or not name:
        raise InvalidInput(f"{kind}s[{index}] needs a 'name' string")
    where = f"{kind} {name!r}"
    datatype = raw.get("datatype")
    if type(datatype) is not str or datatype not in _DATATYPES:
        raise unknown_datatype(where, datatype)
    shape = check_shape(where, raw.get("shape"))
    count = declared_elements(where, shape, limits.max_tensor_elements)
    parameters = _parameters(raw.get("parameters"), where, limits)
    size = parameters.pop("binary_data_size", None)
    if size is not None:
        if "data" in raw:
            raise InvalidInput(f"{where}: has both 'data' and parameters.binary_data_size", hint="send one")
        data = tensor_from_binary(where, datatype, shape, count, reader.take(where, size), limits.max_tensor_elements)
    elif "data" in raw:
        data = tensor_from_json(where, datatype, shape, count, raw["data"], limits.max_tensor_elements)
    else:
        raise InvalidInput(
            f"{where}: has neither 'data' nor parameters.binary_data_size",
            hint="shared memory is not supported; send the tensor in the request",
        )
    if datatype == "BYTES":
        check_bytes_elements(where, data, limits.max_bytes_element)
    return InferInput._decoded(name, shape, datatype, data, parameters)


def unknown_datatype(where: str, datatype: object) -> InvalidInput:
    """The error for a tensor whose datatype is missing (None or empty) or not a protocol datatype."""
    problem = "needs a 'datatype'" if datatype is None or datatype == "" else f"unknown datatype {datatype!r}"
    return InvalidInput(f"{where}: {problem}", hint=f"use one of {', '.join(DATATYPES)}")


def check_shape(where: str, raw: object) -> tuple[int, ...]:
    """A tensor's declared shape: a list of at most 32 non-negative integers (every wire format's rule)."""
    if type(raw) is list and len(raw) <= _MAX_DIMS:
        for dim in raw:
            if type(dim) is not int or dim < 0:
                break
        else:
            return tuple(raw)
    raise InvalidInput(
        f"{where}: 'shape' must be an array of at most {_MAX_DIMS} non-negative integers, got {raw!r:.60}"
    )


def _decode_requested_outputs(raw: object, default_binary: bool, limits: Limits) -> list[InferRequestedOutput]:
    if type(raw) is not list:
        raise InvalidInput(f"request 'outputs' must be an array, got {type(raw).__name__}")
    if len(raw) > limits.max_inputs:
        raise InvalidInput(f"request asks for {len(raw)} outputs, more than the limit of {limits.max_inputs}")
    outputs = []
    for index, entry in enumerate(raw):
        name = entry.get("name") if type(entry) is dict else None
        if type(name) is not str or not name:
            raise InvalidInput(f"outputs[{index}] must be an object with a 'name' string")
        where = f"output {name!r}"
        parameters = _parameters(entry.get("parameters"), where, limits)
        binary_data = _flag(parameters.pop("binary_data", default_binary), where, "binary_data")
        outputs.append(InferRequestedOutput(name, binary_data, parameters))
    return outputs


def _parameters(raw: object, where: str, limits: Limits) -> Parameters:
    if raw is None:
        return {}
    if type(raw) is not dict:
        raise InvalidInput(f"{where}: 'parameters' must be a JSON object, got {type(raw).__name__}")
    # Iterative, so that no parameters object can drive this code's own recursion.
    stack: list[tuple[object, int]] = [(raw, 1)]
    while stack:
        value, depth = stack.pop()
        children = value.values() if type(value) is dict else value if type(value) is list else None
        if children is None:
            continue
        if depth > limits.max_json_depth:
            raise InvalidInput(f"{where}: 'parameters' nest deeper than {limits.max_json_depth} levels")
        stack.extend((child, depth + 1) for child in children)
    return raw


def _flag(value: object, where: str, key: str) -> bool:
    if type(value) is not bool:
        raise InvalidInput(f"{where}: parameters.{key} must be true or false, got {value!r:.40}")
    return value


def _encode_tensor(
    where: str,
    name: str,
    array: np.ndarray,
    datatype: str,
    binary: bool,
    parameters: Parameters,
    blobs: list[bytes],
) -> dict[str, Any]:
    """The JSON entry of one tensor; binary data is appended to ``blobs`` instead."""
    entry: dict[str, Any] = {"name": name, "datatype": datatype, "shape": list(array.shape)}
    if binary:
        blob = tensor_to_binary(array, datatype)
        blobs.append(blob)
        entry["parameters"] = {**parameters, "binary_data_size": len(blob)}
    else:
        entry["data"] = tensor_to_json(where, array, datatype)
        if parameters:
            entry["parameters"] = parameters
    return entry


def _dump(doc: dict[str, Any], blobs: list[bytes]) -> tuple[bytes, int | None]:
    header = orjson.dumps(doc, option=_DUMPS_OPTIONS)
    if not blobs:
        return header, None
    return b"".join([header, *blobs]), len(header)
