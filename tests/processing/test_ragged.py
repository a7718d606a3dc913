from __future__ import annotations

import numpy as np
import pytest

from leanserve.config import TensorSpec
from leanserve.errors import InvalidInput
from leanserve.processing.ragged import Padding, pad_batch, ragged_key, ragged_length, with_mask

SPECS = (
    TensorSpec("input_ids", "INT64", (-1,), pad_value=0),
    TensorSpec("attention_mask", "INT64", (-1,), mask=True),
    TensorSpec("scale", "FP32", (2,)),
)


def _padding() -> Padding:
    padding = Padding.of(SPECS)
    assert padding is not None
    return padding


def test_only_declared_inputs_are_ragged() -> None:
    assert Padding.of((TensorSpec("x", "FP32", (4,)),)) is None
    padding = _padding()
    assert padding.values == {"input_ids": 0.0, "attention_mask": 0.0} and padding.mask == "attention_mask"


def test_requests_of_any_length_share_a_key_but_not_of_another_dtype_or_shape() -> None:
    padding = _padding()

    def key(n: int, dtype: type = np.int64, scale: int = 2) -> tuple[object, ...]:
        inputs = {"input_ids": np.zeros((1, n), dtype), "scale": np.zeros((1, scale), np.float32)}
        return ragged_key(inputs, padding)

    assert key(3) == key(16) == key(17) == key(128)
    assert key(9) != key(9, np.int32)
    assert key(9) != key(9, scale=3)


def test_a_requests_length_is_its_longest_ragged_input() -> None:
    padding = _padding()
    assert ragged_length({"input_ids": np.zeros((2, 7), np.int64), "scale": np.zeros((2, 2))}, padding) == 7
    assert ragged_length({"scale": np.zeros((1, 2))}, padding) == 0


def test_a_batch_is_padded_to_its_longest_member_only() -> None:
    padding = _padding()
    parts = [
        with_mask({"input_ids": np.array([[5, 6, 7]]), "scale": np.ones((1, 2), np.float32)}, padding),
        with_mask({"input_ids": np.array([[8], [9]]), "scale": np.zeros((2, 2), np.float32)}, padding),
    ]
    batch = pad_batch(parts, padding)
    np.testing.assert_array_equal(batch["input_ids"], [[5, 6, 7], [8, 0, 0], [9, 0, 0]])
    np.testing.assert_array_equal(batch["attention_mask"], [[1, 1, 1], [1, 0, 0], [1, 0, 0]])
    assert batch["scale"].shape == (3, 2)


def test_a_mask_sent_by_the_client_is_kept() -> None:
    padding = _padding()
    sent = {"input_ids": np.array([[5, 0]]), "attention_mask": np.array([[1, 0]])}
    np.testing.assert_array_equal(with_mask(sent, padding)["attention_mask"], [[1, 0]])
    with pytest.raises(InvalidInput):
        with_mask({"scale": np.ones((1, 2), np.float32)}, padding)
