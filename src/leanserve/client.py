"""Small clients for a running server's control endpoints, on the standard library.

Inference clients are tritonclient's. These cover what tritonclient calls its model control
(:class:`RepositoryClient`: index, load, unload) and leanserve's experiments
(:class:`ExperimentClient`), with leanserve's bearer token, for the ``leanserve models`` and
``leanserve experiment`` commands and for Python callers.
"""

from __future__ import annotations

import json
import urllib.error
import urllib.parse
import urllib.request
from typing import Any

from .errors import ClientError, LeanserveError, ServerError


class _Client:
    def __init__(self, url: str, token: str | None = None, timeout: float = 300.0) -> None:
        self.url = url.rstrip("/")
        if "://" not in self.url:
            self.url = "http://" + self.url
        self._token = token
        self.timeout = timeout

    def _get(self, path: str) -> Any:
        return self._call("GET", path, None)

    def _post(self, path: str, body: dict[str, Any]) -> Any:
        return self._call("POST", path, json.dumps(body).encode())

    def _call(self, method: str, path: str, data: bytes | None) -> Any:
        headers = {"Content-Type": "application/json"}
        if self._token:
            headers["Authorization"] = f"Bearer {self._token}"
        request = urllib.request.Request(self.url + path, data, headers, method=method)
        try:
            with urllib.request.urlopen(request, timeout=self.timeout) as response:
                body = response.read()
        except urllib.error.HTTPError as e:
            raise _error(e.code, e.read()) from None
        except (urllib.error.URLError, OSError) as e:
            raise ServerError(f"cannot reach {self.url}: {e}", hint="is the server running?") from None
        return json.loads(body) if body else None


class RepositoryClient(_Client):
    def index(self, ready: bool = False) -> list[dict[str, Any]]:
        result: list[dict[str, Any]] = self._post("/v2/repository/index", {"ready": ready})
        return result

    def load(self, model: str) -> None:
        self._post(f"/v2/repository/models/{model}/load", {})

    def unload(self, model: str) -> None:
        self._post(f"/v2/repository/models/{model}/unload", {})


class ExperimentClient(_Client):
    """``/v2/experiments``: the admin token for start, stop, promote and rollback; for reading, the
    admin token when the server has one; for feedback, the inference token when it has one."""

    def list(self) -> list[dict[str, Any]]:
        result: list[dict[str, Any]] = self._get("/v2/experiments")["experiments"]
        return result

    def status(self, name: str) -> dict[str, Any]:
        result: dict[str, Any] = self._get(f"/v2/experiments/{_quote(name)}")
        return result

    def start(self, name: str, table: dict[str, Any]) -> dict[str, Any]:
        """Start an experiment from experiments.toml's fields (``mode``, ``arms``, ...); its status."""
        result: dict[str, Any] = self._post("/v2/experiments", {**table, "name": name})
        return result

    def stop(self, name: str, reason: str | None = None) -> dict[str, Any]:
        return self._act(name, "stop", {} if reason is None else {"reason": reason})

    def rollback(self, name: str, reason: str | None = None) -> dict[str, Any]:
        return self._act(name, "rollback", {} if reason is None else {"reason": reason})

    def promote(self, name: str, arm: str | None = None, reason: str | None = None) -> dict[str, Any]:
        """Send everything to ``arm`` (``model:version``; default: the one candidate)."""
        body: dict[str, Any] = {} if arm is None else {"arm": arm}
        if reason is not None:
            body["reason"] = reason
        return self._act(name, "promote", body)

    def feedback(self, name: str, key: str, reward: float = 1.0) -> None:
        """A reward (or a conversion: any positive value) for a response id or a unit."""
        self._post(f"/v2/experiments/{_quote(name)}/feedback", {"key": key, "reward": reward})

    def _act(self, name: str, action: str, body: dict[str, Any]) -> dict[str, Any]:
        result: dict[str, Any] = self._post(f"/v2/experiments/{_quote(name)}/{action}", body)
        return result


def _quote(name: str) -> str:
    return urllib.parse.quote(name, safe="")


def _error(status: int, body: bytes) -> LeanserveError:
    try:
        message = str(json.loads(body)["error"])
    except (ValueError, KeyError, TypeError):
        message = body.decode("utf-8", "replace")[:500]
    error: LeanserveError = ClientError(message) if status < 500 else ServerError(message)
    error.status = status
    return error


__all__ = ["ExperimentClient", "RepositoryClient"]
