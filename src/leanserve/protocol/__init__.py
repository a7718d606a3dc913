"""The Open Inference Protocol (KServe V2 / Triton HTTP): request types, codecs, validation."""

from .binary import HEADER_LENGTH_HEADER, parse_header_length
from .codec import (
    decode_infer_request,
    decode_infer_result,
    encode_error,
    encode_infer_request,
    encode_infer_result,
)
from .compression import decompress
from .datatypes import DATATYPES, datatype_of, numpy_dtype
from .limits import Limits
from .types import InferInput, InferOutput, InferRequest, InferRequestedOutput, InferResult, Parameters
from .validation import validate_request

__all__ = [
    "DATATYPES",
    "HEADER_LENGTH_HEADER",
    "InferInput",
    "InferOutput",
    "InferRequest",
    "InferRequestedOutput",
    "InferResult",
    "Limits",
    "Parameters",
    "datatype_of",
    "decode_infer_request",
    "decode_infer_result",
    "decompress",
    "encode_error",
    "encode_infer_request",
    "encode_infer_result",
    "numpy_dtype",
    "parse_header_length",
    "validate_request",
]
