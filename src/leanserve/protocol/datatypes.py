"""The Open Inference Protocol datatypes and their numpy equivalents."""

from __future__ import annotations

from typing import Final

import numpy as np

from ..errors import InvalidInput

# BYTES tensors are numpy object arrays holding ``bytes``; every other datatype is fixed-size.
_NUMPY_BY_DATATYPE: Final[dict[str, np.dtype]] = {
    "BOOL": np.dtype(np.bool_),
    "UINT8": np.dtype(np.uint8),
    "UINT16": np.dtype(np.uint16),
    "UINT32": np.dtype(np.uint32),
    "UINT64": np.dtype(np.uint64),
    "INT8": np.dtype(np.int8),
    "INT16": np.dtype(np.int16),
    "INT32": np.dtype(np.int32),
    "INT64": np.dtype(np.int64),
    "FP16": np.dtype(np.float16),
    "FP32": np.dtype(np.float32),
    "FP64": np.dtype(np.float64),
    "BYTES": np.dtype(np.object_),
}

_DATATYPE_BY_NUMPY: Final[dict[np.dtype, str]] = {dtype: name for name, dtype in _NUMPY_BY_DATATYPE.items()}

# ONNX tensor element types (onnx.TensorProto enum values) to OIP datatypes.
_DATATYPE_BY_ONNX_TYPE: Final[dict[str, str]] = {
    "tensor(bool)": "BOOL",
    "tensor(uint8)": "UINT8",
    "tensor(uint16)": "UINT16",
    "tensor(uint32)": "UINT32",
    "tensor(uint64)": "UINT64",
    "tensor(int8)": "INT8",
    "tensor(int16)": "INT16",
    "tensor(int32)": "INT32",
    "tensor(int64)": "INT64",
    "tensor(float16)": "FP16",
    "tensor(float)": "FP32",
    "tensor(double)": "FP64",
    "tensor(string)": "BYTES",
}

DATATYPES: Final[tuple[str, ...]] = tuple(_NUMPY_BY_DATATYPE)


def numpy_dtype(datatype: str) -> np.dtype:
    """The numpy dtype for an OIP datatype name; raises InvalidInput for an unknown name."""
    try:
        return _NUMPY_BY_DATATYPE[datatype]
    except (KeyError, TypeError):
        raise InvalidInput(f"unknown datatype {datatype!r}", hint=f"use one of {', '.join(DATATYPES)}") from None


def datatype_of(array: np.ndarray) -> str:
    """The OIP datatype name of a numpy array (str and bytes arrays are BYTES)."""
    dtype = array.dtype
    known = _DATATYPE_BY_NUMPY.get(dtype)  # native byte order, the common case, without a new dtype
    if known is not None:
        return known
    if dtype.kind in ("U", "S", "O"):
        return "BYTES"
    try:
        return _DATATYPE_BY_NUMPY[dtype.newbyteorder("=")]
    except KeyError:
        raise InvalidInput(f"numpy dtype {dtype} has no Open Inference Protocol datatype") from None


def datatype_from_onnx(onnx_type: str) -> str:
    """The OIP datatype for an ONNX Runtime type string such as ``tensor(float)``."""
    try:
        return _DATATYPE_BY_ONNX_TYPE[onnx_type]
    except KeyError:
        raise InvalidInput(f"ONNX type {onnx_type} has no Open Inference Protocol datatype") from None


def element_size(datatype: str) -> int:
    """Bytes per element in the binary tensor encoding; 0 for BYTES (variable length)."""
    if datatype == "BYTES":
        return 0
    return numpy_dtype(datatype).itemsize
