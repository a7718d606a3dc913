"""A small client for the model repository extension (index, load, unload), on the standard library.

Inference clients are tritonclient's; this covers what tritonclient calls its model control,
with leanserve's bearer token, for the ``leanserve models`` command and for Python callers.
"""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from typing import Any

from .errors import ClientError, LeanserveError, ServerError


class RepositoryClient:
    def __init__(self, url: str, token: str | None = None, timeout: float = 300.0) -> None:
        self.url = url.rstrip("/")
        if "://" not in self.url:
            self.url = "http://" + self.url
        self._token = token
        self.timeout = timeout

    def index(self, ready: bool = False) -> list[dict[str, Any]]:
        result: list[dict[str, Any]] = self._post("/v2/repository/index", {"ready": ready})
        return result

    def load(self, model: str) -> None:
        self._post(f"/v2/repository/models/{model}/load", {})

    def unload(self, model: str) -> None:
        self._post(f"/v2/repository/models/{model}/unload", {})

    def _post(self, path: str, body: dict[str, Any]) -> Any:
        headers = {"Content-Type": "application/json"}
        if self._token:
            headers["Authorization"] = f"Bearer {self._token}"
        request = urllib.request.Request(self.url + path, json.dumps(body).encode(), headers, method="POST")
        try:
            with urllib.request.urlopen(request, timeout=self.timeout) as response:
                data = response.read()
        except urllib.error.HTTPError as e:
            raise _error(e.code, e.read()) from None
        except (urllib.error.URLError, OSError) as e:
            raise ServerError(f"cannot reach {self.url}: {e}", hint="is the server running?") from None
        return json.loads(data) if data else None


def _error(status: int, body: bytes) -> LeanserveError:
    try:
        message = str(json.loads(body)["error"])
    except (ValueError, KeyError, TypeError):
        message = body.decode("utf-8", "replace")[:500]
    error: LeanserveError = ClientError(message) if status < 500 else ServerError(message)
    error.status = status
    return error


__all__ = ["RepositoryClient"]
