"""Tokens: who may control models (admin), who may read the dashboard, and, when asked, who may infer.

Compared in constant time (``hmac.compare_digest``) so a wrong token's timing says nothing of the
right one. Tokens are never logged: the request context keeps the Authorization header out of
its repr.

The dashboard and the failure log are open when the server has no admin token, and need it when
it has one: as a bearer token, or as the cookie the dashboard's sign-in form sets. The cookie holds
an HMAC of the admin token, not the token itself, so a leaked cookie reads the dashboard and
cannot control models.
"""

from __future__ import annotations

import hashlib
import hmac
from dataclasses import dataclass, field

from ..errors import Forbidden, Unauthorized

ADMIN_TOKEN_ENV = "LEANSERVE_ADMIN_TOKEN"
DASHBOARD_COOKIE = "leanserve_dashboard"


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


def dashboard_cookie(tokens: Tokens) -> str | None:
    """The value of the dashboard's sign-in cookie; None when the dashboard is open."""
    return None if tokens.admin is None else _cookie_for(tokens.admin)


def _cookie_for(admin: str) -> str:
    return hmac.new(admin.encode(), b"leanserve dashboard", hashlib.sha256).hexdigest()


def require_dashboard(tokens: Tokens, authorization: str | None, cookie: str | None) -> None:
    """The dashboard and the failure log: open without an admin token, else the token or the sign-in cookie."""
    if tokens.admin is None:
        return
    if cookie and hmac.compare_digest(cookie.encode(), _cookie_for(tokens.admin).encode()):
        return
    _check(tokens.admin, authorization, "the dashboard")


def require_inference(tokens: Tokens, authorization: str | None) -> None:
    if tokens.inference is not None:
        _check(tokens.inference, authorization, "this server")


__all__ = [
    "ADMIN_TOKEN_ENV",
    "DASHBOARD_COOKIE",
    "Tokens",
    "bearer",
    "dashboard_cookie",
    "require_admin",
    "require_dashboard",
    "require_inference",
]
