"""Triton's binary tensor data extension to the Open Inference Protocol over HTTP.

A body is a JSON header of ``Inference-Header-Content-Length`` bytes followed by the raw
tensors, in the order of the tensors whose ``parameters.binary_data_size`` claims them.
Fixed-size datatypes are little-endian and row-major, BOOL is one byte per element, and each
BYTES element is a 4-byte little-endian length followed by that many bytes.

Every size is checked against the bytes actually present before anything is allocated, so a
declared shape can never make the server allocate more than the body carries.
"""

from __future__ import annotations

import struct
from typing import Final

import numpy as np

from ..errors import InvalidInput
from .datatypes import DATATYPES, numpy_dtype
from .limits import too_many_elements

HEADER_LENGTH_HEADER: Final = "Inference-Header-Content-Length"

_LENGTH: Final = struct.Struct("<I")
_LITTLE_ENDIAN: Final[dict[str, np.dtype]] = {
    datatype: numpy_dtype(datatype).newbyteorder("<") for datatype in DATATYPES if datatype != "BYTES"
}


def parse_header_length(value: str | None) -> int | None:
    """The ``Inference-Header-Content-Length`` HTTP header as an int; None when absent."""
    if value is None:
        return None
    text = value.strip()
    # int() alone would also accept "+5", "1_000" and non-ASCII digits.
    if not (text.isascii() and text.isdigit()):
        raise InvalidInput(
            f"{HEADER_LENGTH_HEADER} must be a non-negative integer, got {value!r}",
            hint="set it to the byte length of the JSON header that starts the body",
        )
    return int(text)


def split_body(body: bytes, header_length: int | None) -> tuple[bytes, memoryview]:
    """The JSON header and the binary section (a zero-copy view) of a request or response body."""
    if header_length is None:
        return body, memoryview(b"")
    if type(header_length) is not int or not 0 < header_length <= len(body):
        raise InvalidInput(
            f"{HEADER_LENGTH_HEADER} is {header_length!r} but the body has {len(body)} bytes",
            hint="it must be the byte length of the JSON header that starts the body",
        )
    return body[:header_length], memoryview(body)[header_length:]


class BinaryReader:
    """Hands out consecutive slices of the binary section and checks that all of it is used."""

    __slots__ = ("_buffer", "_offset")

    def __init__(self, buffer: memoryview) -> None:
        self._buffer = buffer
        self._offset = 0

    def take(self, where: str, size: object) -> memoryview:
        if type(size) is not int or size < 0:
            raise InvalidInput(f"{where}: binary_data_size must be a non-negative integer, got {size!r}")
        left = len(self._buffer) - self._offset
        if size > left:
            hint = (
                f"send the {HEADER_LENGTH_HEADER} header with binary data"
                if not self._buffer
                else "binary_data_size must match the bytes sent for this tensor"
            )
            raise InvalidInput(
                f"{where}: binary_data_size is {size} bytes but only {left} bytes of binary data are left",
                hint=hint,
            )
        start = self._offset
        self._offset += size
        return self._buffer[start : self._offset]

    def finish(self) -> None:
        left = len(self._buffer) - self._offset
        if left:
            raise InvalidInput(
                f"{left} bytes of binary data after the JSON header are not claimed by any binary_data_size",
                hint=f"check {HEADER_LENGTH_HEADER} and each tensor's binary_data_size",
            )


def tensor_from_binary(
    where: str, datatype: str, shape: tuple[int, ...], count: int, buffer: memoryview, max_elements: int
) -> np.ndarray:
    """A tensor of ``count`` elements (the product of ``shape``) from its binary encoding.

    Fixed-size tensors are read-only views of the request body, not copies.
    """
    if datatype == "BYTES":
        if count * _LENGTH.size > len(buffer):
            raise InvalidInput(
                f"{where}: shape {list(shape)} needs {count} BYTES elements, "
                f"which cannot fit in binary_data_size {len(buffer)}"
            )
        if count > max_elements:
            raise too_many_elements(where, count, max_elements)
        return deserialize_bytes_tensor(where, buffer, count).reshape(shape)
    dtype = _LITTLE_ENDIAN[datatype]
    expected = count * dtype.itemsize
    if len(buffer) != expected:
        raise InvalidInput(
            f"{where}: shape {list(shape)} of {datatype} needs {expected} bytes, binary_data_size is {len(buffer)}"
        )
    if count > max_elements:
        raise too_many_elements(where, count, max_elements)
    array = np.frombuffer(buffer, dtype=dtype).reshape(shape)
    if datatype == "BOOL" and count and int(array.view(np.uint8).max()) > 1:
        raise InvalidInput(f"{where}: BOOL binary data must hold only bytes 0 and 1")
    return array


def tensor_to_binary(array: np.ndarray, datatype: str) -> bytes:
    """The binary encoding of a tensor whose numpy dtype already matches ``datatype``."""
    if datatype == "BYTES":
        return serialize_bytes_tensor(array)
    little_endian = array.dtype.newbyteorder("<")
    if array.dtype != little_endian:
        array = array.astype(little_endian)
    return array.tobytes()


def serialize_bytes_tensor(array: np.ndarray) -> bytes:
    """Each element as a 4-byte little-endian length and its bytes; ``str`` is UTF-8 encoded."""
    pack = _LENGTH.pack
    parts: list[bytes] = []
    for item in array.ravel().tolist():
        data = item if isinstance(item, bytes) else str(item).encode()
        parts.append(pack(len(data)))
        parts.append(data)
    return b"".join(parts)


def deserialize_bytes_tensor(where: str, buffer: memoryview, count: int) -> np.ndarray:
    """A 1-D object array of ``count`` ``bytes`` elements that must fill ``buffer`` exactly."""
    end = len(buffer)
    unpack = _LENGTH.unpack_from
    items: list[bytes] = []
    offset = 0
    for index in range(count):
        if offset + 4 > end:
            raise InvalidInput(f"{where}: BYTES binary data ends after {index} of {count} elements")
        (length,) = unpack(buffer, offset)
        offset += 4
        if offset + length > end:
            raise InvalidInput(
                f"{where}: BYTES element {index} has length {length}, "
                f"which runs past the end of its binary data by {offset + length - end} bytes"
            )
        items.append(bytes(buffer[offset : offset + length]))
        offset += length
    if offset != end:
        raise InvalidInput(
            f"{where}: BYTES binary data has {end - offset} bytes left after its {count} elements",
            hint="binary_data_size must match the shape",
        )
    array = np.empty(count, dtype=object)
    array[:] = items
    return array
