"""What each endpoint answers, independent of the HTTP layer that carries it.

Both HTTP front ends call these: the fast httptools protocol (:mod:`.http`) for the hot paths and
the Starlette app (:mod:`.asgi`) for everything, so that under uvicorn or Ray Serve the same
answers come back. Every error becomes ``{"error": "..."}`` with its status here, in one place.
The answers as data (``*_doc`` methods, which raise :class:`~leanserve.errors.LeanserveError`)
are what the gRPC front end (:mod:`.grpc`) puts into its messages, so both protocols say the same.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import orjson

from .. import __version__
from ..config import ModelConfig
from ..errors import InvalidInput, LeanserveError, ModelNotReady
from ..experiments.alias import ARM_HEADER, Alias
from ..futures import call_as_future
from ..protocol import InferResult, encode_error, encode_infer_result
from ..registry import ModelRegistry, ModelSnapshot, VersionSnapshot
from ..router import InferBody, RequestContext, Router
from .auth import Tokens, require_admin, require_inference
from .metrics import metrics_registry, render_metrics
from .triton_config import triton_config

log = logging.getLogger("leanserve.server")

JSON = b"application/json"
OCTET = b"application/octet-stream"
EXTENSIONS = ("binary_tensor_data", "statistics", "model_configuration", "model_repository")
Headers = tuple[tuple[bytes, bytes], ...]


@dataclass(slots=True)  # not frozen: one per response, and frozen costs twice as much to build
class Reply:
    status: int
    body: bytes = b""
    content_type: bytes = JSON
    header_length: int | None = None  # Inference-Header-Content-Length, for binary outputs
    headers: Headers = ()


def error_reply(error: LeanserveError) -> Reply:
    message = f"{error.message} ({error.hint})" if error.hint else error.message
    headers: Headers = ()
    if error.retry_after is not None:
        headers = ((b"retry-after", str(error.retry_after).encode()),)
    elif error.status == 401:
        headers = ((b"www-authenticate", b"Bearer"),)
    return Reply(error.status, encode_error(message), headers=headers)


def json_reply(data: Any, status: int = 200) -> Reply:
    return Reply(status, orjson.dumps(data))


def _result_reply(result: InferResult) -> Reply:
    body, header_length = encode_infer_result(result)
    return Reply(200, body, JSON if header_length is None else OCTET, header_length)


# The response header naming each arm, made once per arm rather than encoded per answer. Bounded:
# arm labels come from the experiments' configuration, but a default version resolves per answer.
_ARM_HEADERS: dict[str, Headers] = {}


def arm_header(arm: str) -> Headers:
    """``((b"x-leanserve-arm", b"model:version"),)`` for an arm's label."""
    header = _ARM_HEADERS.get(arm)
    if header is None:
        if len(_ARM_HEADERS) >= 1024:
            _ARM_HEADERS.clear()
        header = _ARM_HEADERS[arm] = ((ARM_HEADER, arm.encode()),)
    return header


class Handlers:
    def __init__(self, registry: ModelRegistry, router: Router, tokens: Tokens | None = None) -> None:
        self.registry = registry
        self.router = router
        self.tokens = tokens or Tokens()
        self.shutting_down = False
        self._metrics = metrics_registry(registry, router)

    # ---- inference (hot path) -------------------------------------------------------------

    def infer(
        self, ctx: RequestContext, model: str, version: str | None, wire: InferBody, respond: Callable[[Reply], None]
    ) -> None:
        """Answer one inference request through ``respond``: at once when it fails early, else when it ran."""
        if self.tokens.inference is not None:
            try:
                require_inference(self.tokens, ctx.authorization)
            except LeanserveError as e:
                if self.router.on_failure is not None:  # refused before the router: logged all the same
                    self.router.on_failure(ctx, model, version or "", e)
                respond(error_reply(e))
                return

        def done(result: InferResult | None, error: LeanserveError | None) -> None:
            if error is not None:
                reply = error_reply(error)
            else:
                assert result is not None
                try:
                    reply = _result_reply(result)
                except LeanserveError as e:
                    reply = error_reply(e)
            if ctx.arm:  # through an experiment alias: name the arm that answered
                reply.headers = reply.headers + arm_header(ctx.arm) if reply.headers else arm_header(ctx.arm)
            respond(reply)

        self.router.infer(ctx, model, version, wire, done)

    async def infer_async(self, ctx: RequestContext, model: str, version: str | None, wire: InferBody) -> Reply:
        reply: Reply = await call_as_future(
            lambda done: self.infer(ctx, model, version, wire, lambda reply: done(reply, None))
        )
        return reply

    # ---- health ------------------------------------------------------------------------------

    def live(self) -> Reply:
        return Reply(200)

    def is_ready(self) -> bool:
        return self.registry.loaded and not self.shutting_down

    def ready(self) -> Reply:
        return Reply(200 if self.is_ready() else 503)

    def model_ready(self, model: str, version: str | None) -> Reply:
        try:
            snap = self.describe(model, version)
        except LeanserveError as e:
            return error_reply(e)
        if snap.ready:
            return Reply(200)
        return Reply(503, encode_error(f"model {model!r} version {snap.version} is {snap.state.value}: {snap.reason}"))

    # ---- metadata, configuration, statistics ------------------------------------------------

    def authorize(self, authorization: str | None) -> Reply | None:
        """None when the request may read models; else the 401/403 to answer."""
        try:
            require_inference(self.tokens, authorization)
        except LeanserveError as e:
            return error_reply(e)
        return None

    def server_metadata(self) -> Reply:
        return json_reply({"name": "leanserve", "version": __version__, "extensions": list(EXTENSIONS)})

    def model_metadata(self, model: str, version: str | None) -> Reply:
        try:
            return json_reply(self.model_metadata_doc(model, version))
        except LeanserveError as e:
            return error_reply(e)

    def model_metadata_doc(self, model: str, version: str | None) -> dict[str, Any]:
        """Model metadata as data (HTTP's JSON, gRPC's message); an experiment alias answers with its control's."""
        name = model
        model, version, alias = self._target(model, version)
        snap = self._configured(model, version)
        versions = [str(v.version) for v in self.registry.model(model).versions]
        config = snap.config
        assert config is not None  # _configured guarantees it
        batch = [-1] if config.batching else []
        extra: dict[str, Any] = {}
        if alias is not None:
            versions = [str(snap.version)]
            extra["experiment"] = {
                "mode": alias.experiment.config.mode,
                "phase": alias.experiment.state.phase,
                "control": f"{snap.name}:{snap.version}",
                "arms": [arm.label for arm in alias.arms],
            }
        return {
            "name": name,
            "versions": versions,
            "platform": config.platform,
            "inputs": [
                {"name": t.name, "datatype": t.datatype, "shape": batch + list(t.shape)} for t in config.public_inputs
            ],
            "outputs": [
                {"name": t.name, "datatype": t.datatype, "shape": batch + list(t.shape)} for t in config.public_outputs
            ],
            "parameters": {
                "version": str(snap.version),
                "metadata": config.metadata,
                "state": snap.state.value,
                "load": snap.load,
                "memory_bytes": snap.memory_bytes,
                **_engine_inputs(config, batch),
                **extra,
            },
        }

    def model_config(self, model: str, version: str | None) -> Reply:
        try:
            return json_reply(self.model_config_doc(model, version))
        except LeanserveError as e:
            return error_reply(e)

    def model_config_doc(self, model: str, version: str | None) -> dict[str, Any]:
        name = model
        model, version, _ = self._target(model, version)
        snap = self._configured(model, version)
        assert snap.config is not None  # _configured guarantees it
        config = triton_config(snap.config, snap.version, snap.providers, snap.load, snap.memory_bytes)
        return {**config, "name": name}

    def describe(self, model: str, version: str | None) -> VersionSnapshot:
        """The version a request for ``model`` reaches, loaded or not (an alias: its control)."""
        model, version, _ = self._target(model, version)
        return self.registry.describe(model, version)

    def _target(self, model: str, version: str | None) -> tuple[str, str | None, Alias | None]:
        """The model and version that answer for ``model``: an experiment alias answers with its control's."""
        alias = self.router.aliases.get(model)
        if alias is None:
            return model, version, None
        if version is not None:
            raise InvalidInput(
                f"{model!r} is an experiment alias: it has no versions of its own",
                hint=f"ask /v2/models/{model}, or a model version by its own name",
            )
        return alias.arms[0].model, alias.versions[0], alias

    def _configured(self, model: str, version: str | None) -> VersionSnapshot:
        """The version's snapshot when its configuration is known (loaded or not); 503 when it is not."""
        snap = self.registry.describe(model, version)
        if snap.config is None:
            raise ModelNotReady(f"model {model!r} version {snap.version} is {snap.state.value}: {snap.reason}")
        return snap

    def model_stats(self, model: str | None, version: str | None) -> Reply:
        try:
            return json_reply({"model_stats": self.model_stats_docs(model, version)})
        except LeanserveError as e:
            return error_reply(e)

    def model_stats_docs(self, model: str | None, version: str | None) -> list[dict[str, object]]:
        """Triton's ``model_stats`` entries: every version (no model), the model's, or one version's."""
        if model is None:
            versions = [v for m in self.registry.snapshot() for v in m.versions]
        elif version:
            versions = [self.registry.describe(model, version)]
        else:
            versions = list(self.registry.model(model).versions)
        return [v.stats.triton_dict() for v in versions]

    # ---- the model repository extension ---------------------------------------------------------

    def repository_index(self, body: bytes = b"") -> Reply:
        """Triton's index: every model version with its state and reason; ``{"ready": true}`` filters."""
        try:
            return json_reply(self.repository_index_docs(_ready_filter(body)))
        except LeanserveError as e:
            return error_reply(e)

    def repository_index_docs(self, ready_only: bool) -> list[dict[str, Any]]:
        entries = [entry for m in self.registry.snapshot() for entry in _index_entries(m)]
        if ready_only:
            entries = [e for e in entries if e["state"] == "READY"]
        return entries

    async def load_model(self, model: str, authorization: str | None) -> Reply:
        try:
            await self.load(model, authorization)
        except LeanserveError as e:
            return error_reply(e)
        return Reply(200)

    async def unload_model(self, model: str, authorization: str | None) -> Reply:
        try:
            await self.unload(model, authorization)
        except LeanserveError as e:
            return error_reply(e)
        return Reply(200)

    async def load(self, model: str, authorization: str | None) -> None:
        """Model control's load, behind the admin token (401 without it, 403 with a wrong one)."""
        require_admin(self.tokens, authorization)
        await self.registry.load(model)

    async def unload(self, model: str, authorization: str | None) -> None:
        require_admin(self.tokens, authorization)
        await self.registry.unload(model)

    def metrics(self) -> tuple[bytes, bytes]:
        return render_metrics(self._metrics)


def _ready_filter(body: bytes) -> bool:
    if not body.strip():
        return False
    try:
        doc = orjson.loads(body)
    except orjson.JSONDecodeError as e:
        raise InvalidInput(f"repository index request is not valid JSON: {e}") from None
    if not isinstance(doc, dict) or not isinstance(doc.get("ready", False), bool):
        raise InvalidInput('repository index request must be a JSON object such as {"ready": true}')
    return bool(doc.get("ready", False))


def _index_entries(model: ModelSnapshot) -> list[dict[str, Any]]:
    if not model.versions:
        return [{"name": model.name, "version": "", "state": "UNAVAILABLE", "reason": model.error}]
    return [
        {
            "name": model.name,
            "version": str(v.version),
            "state": v.state.value,
            "reason": v.reason or model.error,
            "load": v.load,
            "memory_bytes": v.memory_bytes,
            "resident": v.resident,
        }
        for v in model.versions
    ]


def _engine_inputs(config: ModelConfig, batch: list[int]) -> dict[str, Any]:
    """A model with a handler also takes its engine's own inputs (token ids): named in the metadata."""
    if config.public_inputs is config.inputs:
        return {}
    return {
        "engine_inputs": [
            {"name": t.name, "datatype": t.datatype, "shape": batch + list(t.shape)} for t in config.inputs
        ]
    }
