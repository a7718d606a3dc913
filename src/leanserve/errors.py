"""The exception hierarchy, and its single mapping to HTTP status codes and exit codes.

Client errors (the caller sent something wrong) map to 4xx and exit code 2 on the CLI;
server errors (leanserve or the model failed) map to 5xx and exit code 1. Every message
says what was wrong and where; ``hint`` says what to do next.
"""

from __future__ import annotations


class LeanserveError(Exception):
    """Base of every error leanserve raises on purpose."""

    status: int = 500
    exit_code: int = 1

    def __init__(self, message: str, hint: str | None = None, retry_after: int | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint
        self.retry_after = retry_after  # seconds, sent as Retry-After when set

    def __str__(self) -> str:
        return f"{self.message} ({self.hint})" if self.hint else self.message


class ClientError(LeanserveError):
    """The request or the user's input was wrong; retrying it unchanged will fail again."""

    status = 400
    exit_code = 2


class InvalidInput(ClientError):
    """A malformed body, a wrong datatype or shape, a missing or unknown tensor."""


class ModelNotFound(ClientError):
    status = 404


class Conflict(ClientError):
    """The request clashes with what exists (a name already taken)."""

    status = 409


class PayloadTooLarge(ClientError):
    status = 413


class UnsupportedMediaType(ClientError):
    status = 415


class ClientGone(ClientError):
    """The client hung up before its answer was computed (nginx's 499: nobody reads this status)."""

    status = 499


class RequestTimeout(ClientError):
    """The client sent its request too slowly (a header or body that trickles in)."""

    status = 408


class UriTooLong(ClientError):
    status = 414


class HeadersTooLarge(ClientError):
    status = 431


class MethodNotAllowed(ClientError):
    status = 405


class Unauthorized(ClientError):
    """No credentials where the endpoint needs them."""

    status = 401


class Forbidden(ClientError):
    """Wrong credentials, or an endpoint that is switched off."""

    status = 403


class ConfigError(ClientError):
    """A model configuration (model.toml) or repository layout is invalid."""

    def __init__(self, path: str, field: str | None, reason: str, hint: str | None = None) -> None:
        where = f"{path}: {field}" if field else path
        super().__init__(f"{where}: {reason}", hint)
        self.path = path
        self.field = field
        self.reason = reason


class UsageError(ClientError):
    """The command line or a Python API call was used wrongly."""


class ServerError(LeanserveError):
    status = 500


class ModelNotReady(ServerError):
    """The model exists but cannot answer now (loading, failed its checks, unloaded)."""

    status = 503


class DeadlineExceeded(ServerError):
    """The request's own deadline passed before it could be answered."""

    status = 504


class InferenceFailed(ServerError):
    """The engine raised while running a batch."""


class Overloaded(ServerError):
    """The model's queue is full; the caller should back off and retry."""

    status = 503
