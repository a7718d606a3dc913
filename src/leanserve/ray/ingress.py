"""The Ray Serve ingress: the Open Inference Protocol in front of one deployment per model.

Clients (tritonclient, curl) speak to it exactly as to ``leanserve serve``. It reads the model
out of the URL and hands the request, as data, to that model's deployment; Ray routes it to a
replica. Experiments live here: the ingress picks the arm of an alias by the same hash of salt
and unit as one server does (so a unit keeps its arm whichever ingress replica it reaches), and
records outcomes into the shared SQLite store, where every ingress replica's counts add up and
every replica's evaluator adopts the phase and step another one set.
"""

from __future__ import annotations

import asyncio
import hmac
import logging
import re
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final, Literal

import orjson
from starlette.requests import Request
from starlette.responses import Response

from ..errors import ConfigError
from ..experiments.alias import ARM_HEADER
from ..experiments.config import ExperimentConfig, load_experiments
from ..experiments.experiment import Experiment
from ..protocol import encode_error
from ..server.auth import Tokens, bearer
from ..server.experiments import STORE_NAME
from ..server.metrics_merge import render_merged
from .forward import Answer, Call

log = logging.getLogger("leanserve.ray")

Kind = Literal["live", "ready", "server", "model", "stats", "index", "metrics", "experiments", "unknown"]
_MODEL_PATH: Final = re.compile(r"^/v2/models/([^/]+)(?:/versions/([^/]+))?(?:/(ready|infer|config|stats))?$")
_CONTROL_PATH: Final = re.compile(r"^/v2/repository/models/([^/]+)/(load|unload)$")
_EXPERIMENT_PATH: Final = re.compile(r"^/v2/experiments(?:/([^/]+)(?:/([a-z]+))?)?$")


@dataclass(frozen=True, slots=True)
class Target:
    """What a request's path asks for."""

    kind: Kind
    model: str | None = None
    version: str | None = None
    operation: str = ""  # model: "", "ready", "infer", "config", "stats", "load", "unload"


def parse_path(path: str) -> Target:
    """The target of ``path`` (pure: unit-tested without Ray)."""
    fixed: dict[str, Kind] = {
        "/v2/health/live": "live",
        "/v2/health/ready": "ready",
        "/v2": "server",
        "/v2/models/stats": "stats",
        "/v2/repository/index": "index",
        "/metrics": "metrics",
    }
    if path in fixed:
        return Target(fixed[path])
    if m := _MODEL_PATH.match(path):
        return Target("model", m.group(1), m.group(2), m.group(3) or "")
    if m := _CONTROL_PATH.match(path):
        return Target("model", m.group(1), None, m.group(2))
    if m := _EXPERIMENT_PATH.match(path):
        return Target("experiments", m.group(1), None, m.group(2) or "")
    return Target("unknown")


def _same(given: str | None, token: str) -> bool:
    return hmac.compare_digest((given or "").encode(), token.encode())


def _json(value: Any, status: int = 200) -> Response:
    return Response(orjson.dumps(value), status, media_type="application/json")


def _error(message: str, status: int) -> Response:
    return Response(encode_error(message), status, media_type="application/json")


def _response(answer: Answer, extra: Mapping[str, str] | None = None) -> Response:
    headers = {k: v for k, v in answer.headers if k != "content-length"}
    if extra:
        headers.update(extra)
    return Response(answer.body, answer.status, headers=headers)


class Ingress:
    """The body of the ingress deployment (decorated by :func:`.app.build_application`)."""

    def __init__(
        self,
        handles: dict[str, Any],
        experiments_file: str | None = None,
        state_dir: str | None = None,
        tokens: Tokens | None = None,
    ) -> None:
        self.handles = handles  # model name -> DeploymentHandle of its deployment
        self.tokens = tokens or Tokens()
        self.experiments: dict[str, Experiment] = {}
        configs = load_experiments(Path(experiments_file)) if experiments_file else {}
        for config in configs.values():
            self._check(config)
        if configs:
            assert state_dir is not None
            Path(state_dir).mkdir(parents=True, exist_ok=True)
            for name, config in configs.items():
                exp = Experiment.open(config, Path(state_dir) / STORE_NAME)
                exp.start()
                self.experiments[name] = exp

    def _check(self, config: ExperimentConfig) -> None:
        where = config.source or "experiments.toml"
        if config.mode == "shadow":
            raise ConfigError(
                where,
                f"experiments.{config.name}.mode",
                "shadow experiments are served by `leanserve serve`, not on Ray",
                hint="use a split or a canary on Ray",
            )
        if config.name in self.handles:
            raise ConfigError(where, f"experiments.{config.name}", "the alias is also a model's name")
        for arm in config.arms:
            if arm.model not in self.handles:
                raise ConfigError(where, f"experiments.{config.name}.arms", f"no model {arm.model!r} in the repository")

    async def __call__(self, request: Request) -> Response:
        target = parse_path(request.url.path)
        if target.kind == "model":
            return await self._model(request, target)
        if target.kind == "live":
            return Response(b"", 200)
        if target.kind == "ready":
            return Response(b"", 200 if await self._ready() else 503)
        if target.kind == "server":
            return await self._forward(request, next(iter(self.handles)), target)
        if target.kind == "index":
            docs = await asyncio.gather(*(h.index.remote() for h in self.handles.values()))
            return _json([entry for doc in docs for entry in doc])
        if target.kind == "stats":
            calls = {m: await self._call(request, f"/v2/models/{m}/stats") for m in self.handles}
            answers = await asyncio.gather(*(h.call.remote(calls[m]) for m, h in self.handles.items()))
            stats = [s for a in answers if a.status == 200 for s in orjson.loads(a.body)["model_stats"]]
            return _json({"model_stats": stats})
        if target.kind == "metrics":
            texts = await asyncio.gather(*(h.metrics.remote() for h in self.handles.values()))
            body = await asyncio.to_thread(render_merged, list(texts), len(texts))
            return Response(body, 200, media_type="text/plain; version=0.0.4; charset=utf-8")
        if target.kind == "experiments":
            return await self._experiments(request, target)
        return _error(f"no such endpoint: {request.method} {request.url.path}", 404)

    async def _call(self, request: Request, path: str | None = None) -> Call:
        headers = tuple((k.lower(), v) for k, v in request.headers.items())
        client = request.client.host if request.client else None
        return Call(request.method, path or request.url.path, request.url.query.encode(), headers, b"", client)

    async def _forward(self, request: Request, model: str, target: Target, path: str | None = None) -> Response:
        handle = self.handles[model]
        call = await self._call(request, path)
        body = await request.body()
        call = Call(call.method, call.path, call.query, call.headers, body, call.client)
        if target.operation == "infer" and request.method == "POST":
            answer: Answer = await handle.infer.remote(call, target.version)
        else:
            answer = await handle.call.remote(call)
        return _response(answer)

    async def _model(self, request: Request, target: Target) -> Response:
        name = target.model or ""
        exp = self.experiments.get(name)
        if exp is None:
            if name not in self.handles:
                return _error(f"unknown model: {name!r}", 404)
            return await self._forward(request, name, target)
        if target.version is not None:
            return _error(f"{name!r} is an experiment alias: it has no versions of its own", 400)
        if target.operation != "infer":  # metadata, readiness, configuration: the control's
            control = exp.config.arms[0]
            path = request.url.path.replace(f"/v2/models/{name}", f"/v2/models/{control.model}", 1)
            return await self._forward(request, control.model, target, path)
        return await self._through_alias(request, exp)

    async def _through_alias(self, request: Request, exp: Experiment) -> Response:
        headers = tuple((k.lower(), v) for k, v in request.headers.items())
        unit = exp.unit_of(headers)
        i = exp.assign(unit)
        arm = exp.config.arms[i]
        version = None if arm.version is None else str(arm.version)
        start = time.perf_counter()
        call = Call(
            "POST",
            f"/v2/models/{arm.model}/infer",
            b"",
            headers,
            await request.body(),
            request.client.host if request.client else None,
        )
        answer: Answer = await self.handles[arm.model].infer.remote(call, version)
        exp.record(i, time.perf_counter() - start, answer.status < 500, unit)
        return _response(answer, {ARM_HEADER.decode(): arm.label})

    async def _ready(self) -> bool:
        try:
            states = await asyncio.wait_for(
                asyncio.gather(*(h.ready.remote() for h in self.handles.values())), timeout=5.0
            )
        except Exception:  # a deployment that does not answer is not ready
            return False
        return all(states)

    async def _experiments(self, request: Request, target: Target) -> Response:
        name, action = target.model, target.operation
        if action == "feedback" and request.method == "POST" and name in self.experiments:
            return await self._feedback(request, self.experiments[name])
        if request.method != "GET" or action:
            return _error(
                "on Ray, experiments are defined in experiments.toml; only their status and feedback are served here",
                405,
            )
        if self.tokens.admin and not _same(bearer(request.headers.get("authorization")), self.tokens.admin):
            return _error("the admin token is needed to read experiments", 401)
        if name is None:
            return _json({"experiments": [{"name": n, "mode": e.config.mode} for n, e in self.experiments.items()]})
        exp = self.experiments.get(name)
        if exp is None:
            return _error(f"unknown experiment: {name!r}", 404)
        exp.store.flush()
        return _json(await asyncio.to_thread(exp.status))

    async def _feedback(self, request: Request, exp: Experiment) -> Response:
        # Feedback takes the inference token, as on one server: the applications that call the models send it.
        if self.tokens.inference and not _same(bearer(request.headers.get("authorization")), self.tokens.inference):
            return _error("the inference token is needed to send feedback", 401)
        try:
            doc = orjson.loads(await request.body())
            key, reward = str(doc["key"]), float(doc.get("reward", 1.0))
        except (orjson.JSONDecodeError, KeyError, TypeError, ValueError):
            return _error('feedback is {"key": "<response id or unit>", "reward": 1.0}', 400)
        exp.feedback(key, reward)
        return _json({"recorded": True})

    def __del__(self) -> None:
        # Ray Serve calls this at a graceful shutdown, and the collector may call it again.
        experiments, self.experiments = self.experiments, {}
        for exp in experiments.values():
            exp.close()  # writes what the request path counted
