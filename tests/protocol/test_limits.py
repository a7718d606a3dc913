from __future__ import annotations

import pytest

from leanserve.errors import UsageError
from leanserve.protocol import Limits


def test_defaults() -> None:
    limits = Limits()
    assert limits.max_body_bytes == 64 * 1024 * 1024
    assert (limits.max_json_depth, limits.max_tensor_elements, limits.max_inputs) == (32, 16_777_216, 256)


@pytest.mark.parametrize("value", [0, -1, 1.5, True, "8"])
def test_limits_must_be_positive_integers(value: object) -> None:
    with pytest.raises(UsageError, match=r"Limits.max_inputs must be a positive integer"):
        Limits(max_inputs=value)  # type: ignore[arg-type]
