"""``ModelInferRequest`` to :class:`~leanserve.protocol.InferRequest`, and a result to ``ModelInferResponse``.

A tensor comes either in ``raw_input_contents`` (one entry per input, in order: tritonclient's
way, the same bytes as HTTP's binary tensor data) or in its typed ``contents`` (``fp32_contents``
and kin). Both are checked as the HTTP codecs check theirs, with their very functions and
messages: a known datatype, a shape of non-negative dimensions, data whose length matches the
shape, and at most ``Limits.max_tensor_elements`` elements, counted from the declared shape
before anything is allocated. Outputs always go back in ``raw_output_contents``, as Triton sends
them.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Final

import numpy as np
from tritonclient.grpc import service_pb2

from ...errors import InvalidInput
from ...protocol import DATATYPES, InferInput, InferRequest, InferRequestedOutput, InferResult, Limits, datatype_of
from ...protocol.binary import tensor_from_binary, tensor_to_binary
from ...protocol.codec import check_shape, unknown_datatype
from ...protocol.json_codec import tensor_from_json
from ...protocol.limits import check_bytes_elements, declared_elements, too_many_elements
from ...protocol.types import Parameters

_DATATYPES: Final = frozenset(DATATYPES)
# The field of InferTensorContents that carries each datatype; FP16 has none (raw only).
_CONTENTS_FIELD: Final[dict[str, str]] = {
    "BOOL": "bool_contents",
    "UINT8": "uint_contents",
    "UINT16": "uint_contents",
    "UINT32": "uint_contents",
    "UINT64": "uint64_contents",
    "INT8": "int_contents",
    "INT16": "int_contents",
    "INT32": "int_contents",
    "INT64": "int64_contents",
    "FP32": "fp32_contents",
    "FP64": "fp64_contents",
    "BYTES": "bytes_contents",
}
_INT64: Final = (-(2**63), 2**63 - 1)


def decode_infer_request(message: Any, limits: Limits) -> InferRequest:
    """A ``ModelInferRequest`` as the router takes it; InvalidInput or PayloadTooLarge naming what is wrong."""
    tensors = message.inputs
    if len(tensors) > limits.max_inputs:
        raise InvalidInput(f"request has {len(tensors)} inputs, more than the limit of {limits.max_inputs}")
    raw = message.raw_input_contents
    if raw and len(raw) != len(tensors):
        raise InvalidInput(
            f"request has {len(raw)} raw_input_contents for {len(tensors)} inputs",
            hint="send every input's data in raw_input_contents, in the order of the inputs, or every one in contents",
        )
    inputs = [_decode_input(index, tensor, raw[index] if raw else None, limits) for index, tensor in enumerate(tensors)]
    requested = message.outputs
    outputs = None
    if requested:
        if len(requested) > limits.max_inputs:
            raise InvalidInput(f"request asks for {len(requested)} outputs, more than the limit of {limits.max_inputs}")
        outputs = []
        for index, out in enumerate(requested):
            if not out.name:
                raise InvalidInput(f"outputs[{index}] needs a name")
            outputs.append(InferRequestedOutput(out.name, False, parameters_of(out.parameters)))
    return InferRequest(inputs, outputs, message.id or None, parameters_of(message.parameters))


def encode_infer_result(result: InferResult) -> Any:
    """The ``ModelInferResponse`` of a result: every output's data in ``raw_output_contents``."""
    response = service_pb2.ModelInferResponse(
        model_name=result.model_name, model_version=result.model_version, id=result.id or ""
    )
    for out in result.outputs:
        datatype = datatype_of(out.data)
        tensor = response.outputs.add(name=out.name, datatype=datatype, shape=out.data.shape)
        set_parameters(tensor.parameters, out.parameters)
        response.raw_output_contents.append(tensor_to_binary(out.data, datatype))
    set_parameters(response.parameters, result.parameters)
    return response


def parameters_of(message_map: Any) -> Parameters:
    """An ``InferParameter`` map as plain values; an entry with no value set is left out."""
    parameters: Parameters = {}
    for key, value in message_map.items():
        which = value.WhichOneof("parameter_choice")
        if which is not None:
            parameters[key] = getattr(value, which)
    return parameters


def set_parameters(message_map: Any, parameters: Mapping[str, object]) -> None:
    """Plain values into an ``InferParameter`` map; what has no field of its own goes as text."""
    for key, value in parameters.items():
        entry = message_map[key]
        if isinstance(value, bool):
            entry.bool_param = value
        elif isinstance(value, int):
            if _INT64[0] <= value <= _INT64[1]:
                entry.int64_param = value
            elif 0 <= value < 2**64:
                entry.uint64_param = value
            else:
                entry.string_param = str(value)
        elif isinstance(value, float):
            entry.double_param = value
        else:
            entry.string_param = value if isinstance(value, str) else str(value)


def _decode_input(index: int, tensor: Any, raw: bytes | None, limits: Limits) -> InferInput:
    name = tensor.name
    if not name:
        raise InvalidInput(f"inputs[{index}] needs a name")
    where = f"input {name!r}"
    datatype = tensor.datatype
    if datatype not in _DATATYPES:
        raise unknown_datatype(where, datatype)
    shape = check_shape(where, list(tensor.shape))
    count = declared_elements(where, shape, limits.max_tensor_elements)
    parameters = parameters_of(tensor.parameters)
    if any(key.startswith("shared_memory") for key in parameters):
        raise InvalidInput(f"{where}: shared memory is not supported", hint="send the tensor in raw_input_contents")
    has_contents = tensor.HasField("contents")
    if raw is not None:
        if has_contents:
            raise InvalidInput(f"{where}: has both contents and raw_input_contents", hint="send one")
        data = tensor_from_binary(where, datatype, shape, count, memoryview(raw), limits.max_tensor_elements)
    elif has_contents or count == 0:
        data = _from_contents(where, datatype, shape, count, tensor.contents, limits.max_tensor_elements)
    else:
        raise InvalidInput(
            f"{where}: has neither contents nor raw_input_contents",
            hint="shared memory is not supported; send the tensor in the request",
        )
    if datatype == "BYTES":
        check_bytes_elements(where, data, limits.max_bytes_element)
    return InferInput._decoded(name, shape, datatype, data, parameters)


def _from_contents(
    where: str, datatype: str, shape: tuple[int, ...], count: int, contents: Any, max_elements: int
) -> np.ndarray:
    field = _CONTENTS_FIELD.get(datatype)
    if field is None:
        raise InvalidInput(f"{where}: {datatype} has no typed contents field", hint="send it in raw_input_contents")
    for descriptor, _ in contents.ListFields():
        if descriptor.name != field:
            raise InvalidInput(f"{where}: {datatype} data belongs in contents.{field}, got contents.{descriptor.name}")
    values = getattr(contents, field)
    if len(values) != count:
        raise InvalidInput(f"{where}: shape {list(shape)} needs {count} elements, got {len(values)}")
    if count > max_elements:
        raise too_many_elements(where, count, max_elements)
    if datatype == "BYTES":
        array = np.empty(count, dtype=object)
        array[:] = list(values)
        return array.reshape(shape)
    # The JSON codec's conversion: values out of the datatype's range (300 for INT8 in
    # int_contents, which holds int32) are refused with its message, never wrapped around.
    return tensor_from_json(where, datatype, shape, count, list(values), max_elements)


__all__ = ["decode_infer_request", "encode_infer_result", "parameters_of", "set_parameters"]
