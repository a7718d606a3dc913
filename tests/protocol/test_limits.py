from __future__ import annotations

import json

import pytest

from leanserve.errors import PayloadTooLarge, UsageError
from leanserve.protocol import Limits, decode_infer_request


def test_defaults() -> None:
    limits = Limits()
    assert limits.max_body_bytes == 64 * 1024 * 1024
    assert (limits.max_json_depth, limits.max_tensor_elements, limits.max_inputs) == (32, 16_777_216, 256)


@pytest.mark.parametrize("value", [0, -1, 1.5, True, "8"])
def test_limits_must_be_positive_integers(value: object) -> None:
    with pytest.raises(UsageError, match=r"Limits.max_inputs must be a positive integer"):
        Limits(max_inputs=value)  # type: ignore[arg-type]


def test_a_bytes_element_over_the_limit_is_a_413() -> None:
    body = json.dumps({"inputs": [{"name": "s", "datatype": "BYTES", "shape": [2], "data": ["ok", "x" * 300]}]})
    with pytest.raises(PayloadTooLarge) as refused:
        decode_infer_request(body.encode(), None, Limits(max_bytes_element=256))
    assert getattr(refused.value, "status", None) == 413
    assert "element 1 is 300 bytes long" in str(refused.value)
    decode_infer_request(body.encode(), None, Limits(max_bytes_element=300))
