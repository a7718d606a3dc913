"""Tensor data carried inside the JSON of the Open Inference Protocol, to and from numpy.

``data`` is a row-major list, flat or nested to match the shape. Values must already be of
the datatype's kind: ``true``/``false`` for BOOL, integers for the integer types, numbers for
the float types and strings for BYTES. A float sent for an integer type, a number out of range
or a string sent for a number is an error, never a silent cast.

JSON cannot carry NaN or infinities. orjson writes them as ``null`` (tritonclient reads
``null`` back as NaN), and ``null`` in float data is read as NaN; a client that needs
infinities or the exact bit pattern of a NaN asks for binary data instead.
"""

from __future__ import annotations

import array
import re
from typing import Any, Final

import numpy as np

from ..errors import InvalidInput
from .datatypes import numpy_dtype
from .limits import too_many_elements

_INTEGER: Final[frozenset[type]] = frozenset({int})
_FLOAT: Final[frozenset[type]] = frozenset({float, int, type(None)})

# The Python types orjson produces that each datatype accepts. ``bool`` is its own type here,
# so true/false is refused for numbers and 0/1 for BOOL.
_ACCEPTED_TYPES: Final[dict[str, frozenset[type]]] = {
    "BOOL": frozenset({bool}),
    "UINT8": _INTEGER,
    "UINT16": _INTEGER,
    "UINT32": _INTEGER,
    "UINT64": _INTEGER,
    "INT8": _INTEGER,
    "INT16": _INTEGER,
    "INT32": _INTEGER,
    "INT64": _INTEGER,
    "FP16": _FLOAT,
    "FP32": _FLOAT,
    "FP64": _FLOAT,
    "BYTES": frozenset({str}),
}

_NARROW_FLOATS: Final = frozenset({"FP16", "FP32"})

# The datatypes :func:`plain_tensor_from_json` converts through the stdlib's ``array``, whose
# conversion refuses what the datatype cannot hold: a float for an integer type (TypeError), an
# integer out of range (OverflowError), null or a string or a nested array (TypeError). It takes
# true and false as 1 and 0, and overflows to infinity for ``f``: both are checked apart.
_ARRAY_CODES: Final[dict[str, str]] = {
    "UINT8": "B",
    "UINT16": "H",
    "UINT32": "I",
    "UINT64": "Q",
    "INT8": "b",
    "INT16": "h",
    "INT32": "i",
    "INT64": "q",
    "FP32": "f",
    "FP64": "d",
}
_NUMBERS: Final[frozenset[type]] = frozenset({float, int})
# float32 infinities, as bytes in native order: JSON has no infinity, so one in a converted
# tensor is an overflow. A match across two elements only sends the tensor the long way. One
# regular expression over the array's buffer: 0.16 us for 64 elements, where two bytes.find
# calls took 0.55 (their needles start with two zero bytes, frequent in floats). Past some
# thousand elements numpy's isinf is the faster one (150k elements: 14 us against 180 us).
_INFINITY: Final = re.compile(b"|".join(re.escape(np.array([v], np.float32).tobytes()) for v in (np.inf, -np.inf)))
_SEARCH_BELOW: Final = 1024

_KIND_HINTS: Final[dict[frozenset[type], str]] = {
    _ACCEPTED_TYPES["BOOL"]: "send true or false",
    _INTEGER: "send integers, without a decimal point",
    _FLOAT: "send numbers",
    _ACCEPTED_TYPES["BYTES"]: "send strings",
}


def tensor_from_json(
    where: str, datatype: str, shape: tuple[int, ...], count: int, data: object, max_elements: int
) -> np.ndarray:
    """A tensor of ``count`` elements (the product of ``shape``) from JSON ``data``."""
    plain = plain_tensor_from_json(datatype, shape, count, data, max_elements)
    if plain is not None:
        return plain
    flat = _flatten(where, data, shape)
    if len(flat) != count:
        raise InvalidInput(f"{where}: shape {list(shape)} needs {count} elements, got {len(flat)}")
    if count > max_elements:
        raise too_many_elements(where, count, max_elements)
    accepted = _ACCEPTED_TYPES[datatype]
    # One C-speed pass over the elements; np.array(..., dtype) alone would cast 1.5 to 1 for
    # INT32, parse "1.5" for FP32 and take true as 1.
    if not set(map(type, flat)) <= accepted:
        raise _wrong_kind(where, datatype, flat, accepted)
    if datatype == "BYTES":
        array = np.empty(count, dtype=object)
        array[:] = [text.encode() for text in flat]
        return array if len(shape) == 1 else array.reshape(shape)
    dtype = numpy_dtype(datatype)
    try:
        # Python ints out of range raise OverflowError by themselves; floats too large for
        # FP16/FP32 would become inf with only a warning. errstate costs a microsecond, so
        # only where it is needed.
        if datatype in _NARROW_FLOATS:
            with np.errstate(over="raise"):
                array = np.array(flat, dtype=dtype)
        else:
            array = np.array(flat, dtype=dtype)
    except (OverflowError, FloatingPointError):
        raise _out_of_range(where, datatype, flat) from None
    return array if len(shape) == 1 else array.reshape(shape)


def plain_tensor_from_json(
    datatype: str, shape: tuple[int, ...], count: int, data: object, max_elements: int, bools: bool = True
) -> np.ndarray | None:
    """The common tensor, fast: flat numeric ``data`` of exactly ``count`` valid values; else None.

    None means "not this case", never "invalid": :func:`tensor_from_json` then decides, and names
    what is wrong. The checks are the same ones, done in fewer passes: one over the element types
    (for true and false), one conversion that refuses the rest, one search for an overflow.
    ``bools`` False says the JSON text holds no ``true`` or ``false`` at all (the caller read it off
    the body's bytes, see ``codec.decode_infer_request``, far cheaper than the pass over the
    elements' types): that pass is skipped.
    """
    code = _ARRAY_CODES.get(datatype)
    if code is None or type(data) is not list or len(data) != count or count > max_elements:
        return None
    if bools and not set(map(type, data)) <= _NUMBERS:  # no true or false (nor null, strings or arrays)
        return None
    try:
        values = array.array(code, data)
    except (TypeError, OverflowError):
        return None
    tensor = np.ndarray(shape, _NUMPY_BY_CODE[code], values)  # a view of the array's buffer, in one call
    if code == "f" and (_INFINITY.search(values) if count < _SEARCH_BELOW else np.isinf(tensor).any()):
        return None
    return tensor


def tensor_to_json(where: str, array: np.ndarray, datatype: str) -> Any:
    """The flat ``data`` of a tensor, as something orjson serializes with OPT_SERIALIZE_NUMPY."""
    if datatype != "BYTES":
        # orjson serializes only C-contiguous, native-endian arrays; ravel() makes the first.
        if not array.dtype.isnative:
            array = array.astype(array.dtype.newbyteorder("="))
        return array.ravel()
    items = array.ravel().tolist()
    try:
        return [item.decode() if isinstance(item, bytes) else str(item) for item in items]
    except UnicodeDecodeError:
        raise InvalidInput(
            f"{where}: holds bytes that are not UTF-8 and so cannot be sent as JSON",
            hint='request it with binary data (parameters: {"binary_data": true})',
        ) from None


def _flatten(where: str, data: object, shape: tuple[int, ...]) -> list[Any]:
    """Row-major elements of flat or nested ``data``; nested data must match ``shape`` exactly."""
    if type(data) is not list:
        raise InvalidInput(f"{where}: 'data' must be a JSON array, got {_json_type(data)}")
    if not data or type(data[0]) is not list:
        return data  # flat; a list further in is reported by the caller's type check
    rows: list[Any] = [data]
    # Level by level rather than recursively: the depth is bounded by the declared shape.
    for depth, size in enumerate(shape):
        elements: list[Any] = []
        for row in rows:
            if type(row) is not list or len(row) != size:
                raise InvalidInput(
                    f"{where}: nested data does not match shape {list(shape)}: "
                    f"expected arrays of {size} at depth {depth}",
                    hint="send a flat array in row-major order, or nest it exactly as the shape says",
                )
            elements.extend(row)
        rows = elements
    return rows


def _wrong_kind(where: str, datatype: str, flat: list[Any], accepted: frozenset[type]) -> InvalidInput:
    index, bad = next((i, x) for i, x in enumerate(flat) if type(x) not in accepted)
    if type(bad) is list:
        return InvalidInput(
            f"{where}: data is ragged or nested deeper than its shape (element {index} is an array)",
            hint="send a flat array in row-major order, or nest it exactly as the shape says",
        )
    return InvalidInput(
        f"{where}: {datatype} data cannot hold {_json_type(bad)} {_preview(bad)} (element {index})",
        hint=_KIND_HINTS[accepted],
    )


def _out_of_range(where: str, datatype: str, flat: list[Any]) -> InvalidInput:
    dtype = numpy_dtype(datatype)
    low: float
    high: float
    if dtype.kind == "f":
        high = float(np.finfo(dtype).max)
        low, bounds = -high, f"±{high:.4g}"
    else:
        iinfo = np.iinfo(dtype)
        low, high, bounds = iinfo.min, iinfo.max, f"{iinfo.min} to {iinfo.max}"
    for index, value in enumerate(flat):
        if value is not None and not low <= value <= high:
            return InvalidInput(
                f"{where}: {_preview(value)} (element {index}) is out of range for {datatype} ({bounds})"
            )
    return InvalidInput(f"{where}: a value is out of range for {datatype} ({bounds})")


def _json_type(value: object) -> str:
    if value is None:
        return "null"
    return {
        bool: "boolean",
        int: "integer",
        float: "number",
        str: "string",
        list: "array",
        dict: "object",
    }.get(type(value), type(value).__name__)


def _preview(value: object) -> str:
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


_NUMPY_BY_CODE: Final[dict[str, np.dtype]] = {code: numpy_dtype(name) for name, code in _ARRAY_CODES.items()}
