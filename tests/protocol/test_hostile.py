"""Property tests: whatever bytes a client sends, the codecs answer a client error or a request.

Never another exception (it would escape as a 500, or, before the router caught them, leave the
connection unanswered and the model version leased), and never an allocation beyond the limits.
Every input hypothesis found that broke this is pinned below as an explicit example.
"""

from __future__ import annotations

import json
import struct

from hypothesis import example, given, settings
from hypothesis import strategies as st

from leanserve.errors import ClientError
from leanserve.protocol import DATATYPES, Limits, decode_infer_request

LIMITS = Limits(max_body_bytes=1 << 20, max_tensor_elements=4096, max_bytes_element=1024)

json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**70), 2**70) | st.floats() | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=6), inner, max_size=4),
    max_leaves=20,
)
dims = st.integers(-3, 2**66) | st.sampled_from([0, 1, 2, 2**31, 2**62, 2**63, 2**64])
tensor_docs = st.fixed_dictionaries(
    {},
    optional={
        "name": st.text(max_size=4) | json_values,
        "datatype": st.sampled_from(DATATYPES) | json_values,
        "shape": st.lists(dims, max_size=5) | json_values,
        "data": st.lists(json_values, max_size=6) | json_values,
        "parameters": st.dictionaries(
            st.sampled_from(["binary_data_size", "binary_data", "x"]), st.integers(-5, 2**40) | json_values, max_size=2
        )
        | json_values,
    },
)
request_docs = st.fixed_dictionaries(
    {},
    optional={
        "id": json_values,
        "inputs": st.lists(tensor_docs, max_size=3) | json_values,
        "outputs": st.lists(st.fixed_dictionaries({"name": st.text(max_size=3)}), max_size=2) | json_values,
        "parameters": st.dictionaries(st.text(max_size=8), json_values, max_size=3) | json_values,
    },
)


def _decodes_or_refuses(body: bytes, header_length: int | None) -> None:
    try:
        request = decode_infer_request(body, header_length, LIMITS)
    except ClientError as e:
        assert 400 <= e.status < 500
        return
    for inp in request.inputs:
        assert inp.data.size <= LIMITS.max_tensor_elements
        assert inp.data.nbytes <= len(body) * 8 + 64  # nothing allocated beyond what the body carries


@settings(max_examples=150, deadline=None)
@given(st.binary(max_size=256), st.none() | st.integers(-4, 300))
def test_arbitrary_bytes(body: bytes, header_length: int | None) -> None:
    _decodes_or_refuses(body, header_length)


@settings(max_examples=250, deadline=None)
@given(request_docs)
@example({"inputs": [{"name": "x", "datatype": "FP32", "shape": [2**62, 0], "data": []}]})
@example({"inputs": [{"name": "x", "datatype": "BYTES", "shape": [2**63, 0], "data": []}]})
@example({"inputs": [{"name": "0", "datatype": []}]})  # found here: a TypeError (unhashable list), not a 400
def test_arbitrary_request_documents(doc: dict[str, object]) -> None:
    _decodes_or_refuses(json.dumps(doc, allow_nan=True).encode(), None)


@settings(max_examples=150, deadline=None)
@given(
    st.sampled_from(DATATYPES),
    st.lists(dims, min_size=0, max_size=4),
    st.integers(-2, 2**40),
    st.binary(max_size=128),
    st.booleans(),
)
@example("BYTES", [3], 12, struct.pack("<I", 2**31) + b"\0" * 8, False)
@example("FP32", [2**62, 0], 0, b"", False)
def test_binary_tensors_with_lying_sizes(
    datatype: str, shape: list[int], size: int, blob: bytes, bytes_prefix: bool
) -> None:
    if bytes_prefix and datatype == "BYTES":
        blob = struct.pack("<I", len(blob)) + blob
    header = json.dumps(
        {"inputs": [{"name": "x", "datatype": datatype, "shape": shape, "parameters": {"binary_data_size": size}}]}
    ).encode()
    _decodes_or_refuses(header + blob, len(header))
