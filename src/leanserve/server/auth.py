"""Tokens: who may control models (admin) and, when asked, who may infer.

Compared in constant time (``hmac.compare_digest``) so a wrong token's timing says nothing of the
right one. Tokens are never logged: the request context keeps the Authorization header out of
its repr.
"""

from __future__ import annotations

import hmac
from dataclasses import dataclass, field

from ..errors import Forbidden, Unauthorized

ADMIN_TOKEN_ENV = "LEANSERVE_ADMIN_TOKEN"


@dataclass(frozen=True, slots=True)
class Tokens:
    admin: str | None = field(default=None, repr=False)  # None: the control endpoints are off
    inference: str | None = field(default=None, repr=False)  # None: inference is open


def bearer(authorization: str | None) -> str | None:
    """The token of an ``Authorization: Bearer <token>`` header, or None."""
    if not authorization:
        return None
    scheme, _, token = authorization.strip().partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        return None
    return token.strip()


def _check(expected: str, authorization: str | None, what: str) -> None:
    given = bearer(authorization)
    if given is None:
        raise Unauthorized(f"{what} needs a token", hint="send 'Authorization: Bearer <token>'")
    if not hmac.compare_digest(given.encode(), expected.encode()):
        raise Forbidden(f"wrong token for {what}")


def require_admin(tokens: Tokens, authorization: str | None) -> None:
    if tokens.admin is None:
        raise Forbidden(
            "model control is off: the server has no admin token",
            hint=f"start it with --admin-token or the {ADMIN_TOKEN_ENV} environment variable",
        )
    _check(tokens.admin, authorization, "model control")


def require_inference(tokens: Tokens, authorization: str | None) -> None:
    if tokens.inference is not None:
        _check(tokens.inference, authorization, "this server")


__all__ = ["ADMIN_TOKEN_ENV", "Tokens", "bearer", "require_admin", "require_inference"]
