"""Every error leanserve raises has its gRPC code, as Triton maps its own."""

from __future__ import annotations

import grpc
import pytest

from leanserve import errors
from leanserve.server.grpc.status import status_code, trailing_metadata


@pytest.mark.parametrize(
    ("error", "code"),
    [
        (errors.InvalidInput("x"), grpc.StatusCode.INVALID_ARGUMENT),
        (errors.UnsupportedMediaType("x"), grpc.StatusCode.INVALID_ARGUMENT),
        (errors.Unauthorized("x"), grpc.StatusCode.UNAUTHENTICATED),
        (errors.Forbidden("x"), grpc.StatusCode.PERMISSION_DENIED),
        (errors.ModelNotFound("x"), grpc.StatusCode.NOT_FOUND),
        (errors.MethodNotAllowed("x"), grpc.StatusCode.UNIMPLEMENTED),
        (errors.PayloadTooLarge("x"), grpc.StatusCode.RESOURCE_EXHAUSTED),
        (errors.InferenceFailed("x"), grpc.StatusCode.INTERNAL),
        (errors.ModelNotReady("x"), grpc.StatusCode.UNAVAILABLE),
        (errors.Overloaded("x"), grpc.StatusCode.UNAVAILABLE),
    ],
)
def test_each_error_has_tritons_code(error: errors.LeanserveError, code: grpc.StatusCode) -> None:
    assert status_code(error) is code


def test_a_status_without_its_own_code_maps_by_class() -> None:
    teapot = errors.ClientError("x")
    teapot.status = 418
    timeout = errors.ServerError("x")
    timeout.status = 504
    odd = errors.ServerError("x")
    odd.status = 507
    assert status_code(teapot) is grpc.StatusCode.INVALID_ARGUMENT
    assert status_code(timeout) is grpc.StatusCode.DEADLINE_EXCEEDED
    assert status_code(odd) is grpc.StatusCode.INTERNAL


def test_retry_after_travels_as_trailing_metadata() -> None:
    assert trailing_metadata(errors.ModelNotReady("loading", retry_after=3)) == (("retry-after", "3"),)
    assert trailing_metadata(errors.InvalidInput("x")) == ()
