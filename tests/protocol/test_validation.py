from __future__ import annotations

import pytest

from leanserve.config import TensorSpec
from leanserve.errors import InvalidInput
from leanserve.protocol import InferInput, InferRequest, InferRequestedOutput, validate_request

INPUTS = (TensorSpec("image", "FP32", (3, -1)), TensorSpec("mask", "BOOL", (4,)))
OUTPUTS = (TensorSpec("scores", "FP32", (10,)), TensorSpec("label", "INT64", ()))


def tensor(name: str, datatype: str, shape: tuple[int, ...]) -> InferInput:
    return InferInput(name, shape, datatype)  # validation looks at the declared shape only


def request(*inputs: InferInput, outputs: list[str] | None = None) -> InferRequest:
    requested = None if outputs is None else [InferRequestedOutput(name) for name in outputs]
    return InferRequest(list(inputs), requested)


def check(req: InferRequest, max_batch_size: int = 8) -> int:
    return validate_request(req, INPUTS, OUTPUTS, max_batch_size)


def assert_invalid(req: InferRequest, message: str, max_batch_size: int = 8) -> InvalidInput:
    with pytest.raises(InvalidInput) as caught:
        check(req, max_batch_size)
    assert caught.value.message == message
    return caught.value


def test_batched_request_returns_its_batch_size() -> None:
    req = request(tensor("mask", "BOOL", (5, 4)), tensor("image", "FP32", (5, 3, 17)), outputs=["label"])
    assert check(req) == 5


def test_unbatched_request_returns_zero() -> None:
    assert check(request(tensor("image", "FP32", (3, 2)), tensor("mask", "BOOL", (4,))), 0) == 0


def test_variable_dimensions_match_any_size_including_zero() -> None:
    assert check(request(tensor("image", "FP32", (1, 3, 0)), tensor("mask", "BOOL", (1, 4)))) == 1


def test_missing_input() -> None:
    error = assert_invalid(request(tensor("image", "FP32", (1, 3, 2))), "missing input 'mask'")
    assert error.hint == "the model's inputs are 'image', 'mask'"
    assert_invalid(request(), "missing inputs 'image', 'mask'")


def test_unknown_input() -> None:
    req = request(tensor("image", "FP32", (1, 3, 2)), tensor("mask", "BOOL", (1, 4)), tensor("extra", "FP32", (1,)))
    error = assert_invalid(req, "unknown input 'extra'")
    assert error.hint == "the model's inputs are 'image', 'mask'"


def test_duplicate_input() -> None:
    req = request(tensor("image", "FP32", (1, 3, 2)), tensor("image", "FP32", (1, 3, 2)))
    assert_invalid(req, "input 'image' appears more than once in the request")


def test_wrong_datatype() -> None:
    req = request(tensor("image", "INT64", (1, 3, 2)), tensor("mask", "BOOL", (1, 4)))
    assert_invalid(req, "input 'image': expected datatype FP32, got INT64")


@pytest.mark.parametrize(
    ("shape", "message"),
    [
        ((1, 4, 2), "input 'image': expected shape [n, 3, -1] with n the batch size, got [1, 4, 2]"),
        ((3, 2), "input 'image': expected shape [n, 3, -1] with n the batch size, got [3, 2]"),
        ((1, 3, 2, 1), "input 'image': expected shape [n, 3, -1] with n the batch size, got [1, 3, 2, 1]"),
        ((0, 3, 2), "input 'image': batch size 0 is outside 1..8"),
        ((9, 3, 2), "input 'image': batch size 9 is outside 1..8"),
    ],
)
def test_wrong_batched_shape(shape: tuple[int, ...], message: str) -> None:
    assert_invalid(request(tensor("image", "FP32", shape), tensor("mask", "BOOL", (1, 4))), message)


def test_unbatched_shape_must_match_exactly() -> None:
    req = request(tensor("image", "FP32", (1, 3, 2)), tensor("mask", "BOOL", (4,)))
    assert_invalid(req, "input 'image': expected shape [3, -1], got [1, 3, 2]", max_batch_size=0)


def test_inputs_must_agree_on_the_batch_size() -> None:
    req = request(tensor("image", "FP32", (2, 3, 1)), tensor("mask", "BOOL", (3, 4)))
    assert_invalid(req, "input 'mask': batch size 3 differs from input 'image''s 2")


def test_scalar_spec_with_batching_is_one_dimension() -> None:
    specs = (TensorSpec("x", "INT64", ()),)
    assert validate_request(request(tensor("x", "INT64", (4,))), specs, (), 8) == 4
    with pytest.raises(InvalidInput, match=r"expected shape \[n\] with n the batch size, got \[4, 1\]"):
        validate_request(request(tensor("x", "INT64", (4, 1))), specs, (), 8)


def test_requested_outputs() -> None:
    inputs = (tensor("image", "FP32", (1, 3, 2)), tensor("mask", "BOOL", (1, 4)))
    error = assert_invalid(request(*inputs, outputs=["scores", "logits"]), "unknown requested output 'logits'")
    assert error.hint == "the model's outputs are 'scores', 'label'"
    assert_invalid(request(*inputs, outputs=["label", "label"]), "output 'label' is requested more than once")


ONE = (TensorSpec("image", "FP32", (3, -1)),)


@pytest.mark.parametrize(
    ("sent", "max_batch_size", "answer"),
    [
        (tensor("image", "FP32", (2, 3, 5)), 8, 2),
        (tensor("image", "FP32", (8, 3, 0)), 8, 8),
        (tensor("image", "FP32", (3, 7)), 0, 0),
        (tensor("image", "FP32", (9, 3, 5)), 8, "input 'image': batch size 9 is outside 1..8"),
        (tensor("image", "FP32", (0, 3, 5)), 8, "input 'image': batch size 0 is outside 1..8"),
        (
            tensor("image", "FP32", (2, 4, 5)),
            8,
            "input 'image': expected shape [n, 3, -1] with n the batch size, got [2, 4, 5]",
        ),
        (tensor("image", "FP32", (3,)), 8, "input 'image': expected shape [n, 3, -1] with n the batch size, got [3]"),
        (tensor("image", "FP32", (1, 3, 7)), 0, "input 'image': expected shape [3, -1], got [1, 3, 7]"),
        (tensor("image", "FP16", (2, 3, 5)), 8, "input 'image': expected datatype FP32, got FP16"),
        (tensor("pixels", "FP32", (2, 3, 5)), 8, "unknown input 'pixels'"),
    ],
)
def test_a_model_of_one_input_is_checked_as_any_other(sent: InferInput, max_batch_size: int, answer: int | str) -> None:
    # The common case has a shorter way through validate_request: it must agree with the long one.
    if isinstance(answer, int):
        assert validate_request(request(sent), ONE, OUTPUTS, max_batch_size) == answer
    else:
        with pytest.raises(InvalidInput) as caught:
            validate_request(request(sent), ONE, OUTPUTS, max_batch_size)
        assert caught.value.message == answer
    # Naming an output takes the long way: the same answer.
    named = InferRequest([sent], [InferRequestedOutput("scores")])
    if isinstance(answer, int):
        assert validate_request(named, ONE, OUTPUTS, max_batch_size) == answer
    else:
        with pytest.raises(InvalidInput, match=answer.replace("[", r"\[").replace("]", r"\]")):
            validate_request(named, ONE, OUTPUTS, max_batch_size)
