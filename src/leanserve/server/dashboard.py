"""What the dashboard's endpoints answer: the page, its sign-in, its state, the failure log, the reports.

Read-only: nothing here changes the server. Open when the server has no admin token; with one,
every answer but the static assets and the sign-in form needs it (see :mod:`.auth`).
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from urllib.parse import parse_qs

import orjson

from ..dashboard import dashboard_state
from ..dashboard.assets import index_page, login_page, report_file, report_links, static_asset
from ..errors import LeanserveError
from ..failures import FailureQuery
from ..protocol import encode_error
from ..registry import ModelRegistry
from ..router import Router
from .auth import DASHBOARD_COOKIE, Tokens, bearer, dashboard_cookie, require_dashboard
from .experiments import Experiments
from .handlers import Headers, Reply, error_reply
from .observability import Observability

HTML = b"text/html; charset=utf-8"
# The page loads only its own files; scripts never run inline (every server text goes in as text).
PAGE_HEADERS: Headers = (
    (
        b"content-security-policy",
        b"default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; "
        b"form-action 'self'; frame-ancestors 'none'; base-uri 'none'",
    ),
    (b"x-content-type-options", b"nosniff"),
    (b"referrer-policy", b"no-referrer"),
    (b"cache-control", b"no-store"),
)
# Reports are leanserve's own self-contained pages (inline CSS and SVG, no scripts); sandboxed all the same.
REPORT_HEADERS: Headers = (
    (b"content-security-policy", b"default-src 'none'; style-src 'unsafe-inline'; img-src data:; sandbox"),
    (b"x-content-type-options", b"nosniff"),
    (b"cache-control", b"no-cache"),
)


class Dashboard:
    def __init__(
        self,
        registry: ModelRegistry,
        router: Router,
        observability: Observability,
        tokens: Tokens,
        experiments: Experiments | None = None,
    ) -> None:
        self.registry = registry
        self.router = router
        self.observability = observability
        self.tokens = tokens
        self.experiments = experiments

    def authorize(self, authorization: str | None, cookie: str | None) -> Reply | None:
        """None when the request may read the dashboard; else the 401/403 to answer."""
        try:
            require_dashboard(self.tokens, authorization, cookie)
        except LeanserveError as e:
            return error_reply(e)
        return None

    # ---- the page and its sign-in ----------------------------------------------------------------

    def page(self, authorization: str | None, cookie: str | None) -> Reply:
        denied = self.authorize(authorization, cookie)
        if denied is not None:
            message = "wrong token" if bearer(authorization) is not None else ""
            return Reply(denied.status, login_page(message), HTML, headers=PAGE_HEADERS)
        return Reply(200, index_page(), HTML, headers=PAGE_HEADERS)

    def login(self, form: bytes) -> Reply:
        """The sign-in form's POST: the admin token in, a cookie out (an HMAC of it, see :mod:`.auth`)."""
        expected = dashboard_cookie(self.tokens)
        if expected is None:
            return _see_dashboard()
        token = parse_qs(form.decode("utf-8", "replace")).get("token", [""])[0].strip()
        if not token:
            return Reply(400, login_page("enter the admin token"), HTML, headers=PAGE_HEADERS)
        denied = self.authorize(f"Bearer {token}", None)
        if denied is not None:
            return Reply(denied.status, login_page("wrong token"), HTML, headers=PAGE_HEADERS)
        return _see_dashboard(f"{DASHBOARD_COOKIE}={expected}; Path=/; HttpOnly; SameSite=Strict")

    def logout(self) -> Reply:
        return _see_dashboard(f"{DASHBOARD_COOKIE}=; Path=/; HttpOnly; SameSite=Strict; Max-Age=0")

    def static(self, name: str) -> Reply:
        asset = static_asset(name)
        if asset is None:
            return Reply(404, encode_error(f"no dashboard file {name[:80]!r}"))
        content, content_type = asset
        return Reply(200, content, content_type.encode(), headers=((b"cache-control", b"no-cache"),))

    # ---- data ------------------------------------------------------------------------------------

    async def state(self, authorization: str | None, cookie: str | None) -> Reply:
        denied = self.authorize(authorization, cookie)
        if denied is not None:
            return denied
        repository = self.registry.repository
        doc = dashboard_state(
            self.registry,
            self.observability.sampler,
            lambda model: report_links(repository, model),
            self.router.unrouted,
        )
        doc["signed_in"] = self.tokens.admin is not None
        doc["failure_log"] = self.observability.failures is not None
        if self.experiments is not None:
            doc["experiments"] = await self.experiments.statuses()
        return Reply(200, orjson.dumps(doc), headers=((b"cache-control", b"no-store"),))

    async def failures(self, authorization: str | None, cookie: str | None, params: Mapping[str, str]) -> Reply:
        denied = self.authorize(authorization, cookie)
        if denied is not None:
            return denied
        try:
            query = FailureQuery.from_params(params)
        except LeanserveError as e:
            return error_reply(e)
        log = self.observability.failures
        if log is None:
            return Reply(200, orjson.dumps({"enabled": False, "dropped": 0, "failures": []}))
        found = await asyncio.to_thread(log.query, query)  # SQLite reads block: off the event loop
        body = {"enabled": True, "dropped": log.dropped, "failures": [f.as_dict() for f in found]}
        return Reply(200, orjson.dumps(body), headers=((b"cache-control", b"no-store"),))

    async def report(self, authorization: str | None, cookie: str | None, model: str, name: str) -> Reply:
        denied = self.authorize(authorization, cookie)
        if denied is not None:
            return denied
        models = [m.name for m in self.registry.snapshot()]
        found = report_file(self.registry.repository, models, model, name)
        if found is None:
            message = f"no {name[:40]!r} for model {model[:80]!r} (a model's reports are report.html and report.json)"
            return Reply(404, encode_error(message))
        path, content_type = found
        content = await asyncio.to_thread(path.read_bytes)
        return Reply(200, content, content_type.encode(), headers=REPORT_HEADERS)


def _see_dashboard(cookie: str | None = None) -> Reply:
    headers: Headers = ((b"location", b"/dashboard"),)
    if cookie is not None:
        headers += ((b"set-cookie", cookie.encode()),)
    return Reply(303, b"", HTML, headers=headers)


__all__ = ["Dashboard"]
