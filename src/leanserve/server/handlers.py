"""What each endpoint answers, independent of the HTTP layer that carries it.

Both front ends call these: the fast httptools protocol (:mod:`.http`) for the hot paths and
the Starlette app (:mod:`.asgi`) for everything, so that under uvicorn or Ray Serve the same
answers come back. Every error becomes ``{"error": "..."}`` with its status here, in one place.
"""

from __future__ import annotations

import asyncio
import logging
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import orjson

from .. import __version__
from ..errors import InvalidInput, LeanserveError, PayloadTooLarge, UnsupportedMediaType
from ..protocol import (
    InferResult,
    Limits,
    decode_infer_request,
    encode_error,
    encode_infer_result,
    parse_header_length,
)
from ..registry import Model, ModelRegistry, ModelVersion
from ..router import Router
from .metrics import metrics_registry, render_metrics

log = logging.getLogger("leanserve.server")

JSON = b"application/json"
OCTET = b"application/octet-stream"
EXTENSIONS = ("binary_tensor_data", "statistics", "model_configuration")


@dataclass(frozen=True, slots=True)
class Reply:
    status: int
    body: bytes = b""
    content_type: bytes = JSON
    header_length: int | None = None  # Inference-Header-Content-Length, for binary outputs


def error_reply(error: LeanserveError) -> Reply:
    message = f"{error.message} ({error.hint})" if error.hint else error.message
    return Reply(error.status, encode_error(message))


def json_reply(data: Any, status: int = 200) -> Reply:
    return Reply(status, orjson.dumps(data))


def _result_reply(result: InferResult) -> Reply:
    body, header_length = encode_infer_result(result)
    return Reply(200, body, JSON if header_length is None else OCTET, header_length)


class Handlers:
    def __init__(self, registry: ModelRegistry, router: Router, limits: Limits) -> None:
        self.registry = registry
        self.router = router
        self.limits = limits
        self.shutting_down = False
        self._metrics = metrics_registry(registry)

    # ---- inference (hot path) -------------------------------------------------------------

    def infer(
        self,
        model: str,
        version: str | None,
        body: bytes,
        header_length: str | None,
        content_encoding: str | None,
        respond: Callable[[Reply], None],
    ) -> None:
        """Answer one inference request through ``respond``: at once when it fails early, else when it ran."""
        try:
            if len(body) > self.limits.max_body_bytes:
                raise PayloadTooLarge(
                    f"request body of {len(body)} bytes exceeds the limit of {self.limits.max_body_bytes}",
                    hint="send fewer items per request or raise --max-body-bytes",
                )
            target = self.router.resolve(model, version)
            if content_encoding:
                body = decompress(body, content_encoding, self.limits.max_body_bytes)
            request = decode_infer_request(body, parse_header_length(header_length), self.limits)
        except LeanserveError as e:
            respond(error_reply(e))
            return

        def done(result: InferResult | None, error: LeanserveError | None) -> None:
            if error is not None:
                respond(error_reply(error))
                return
            assert result is not None
            try:
                reply = _result_reply(result)
            except LeanserveError as e:
                reply = error_reply(e)
            respond(reply)

        self.router.submit(target, request, done)

    async def infer_async(
        self, model: str, version: str | None, body: bytes, header_length: str | None, content_encoding: str | None
    ) -> Reply:
        future: asyncio.Future[Reply] = asyncio.get_running_loop().create_future()
        self.infer(model, version, body, header_length, content_encoding, future.set_result)
        return await future

    # ---- health ------------------------------------------------------------------------------

    def live(self) -> Reply:
        return Reply(200)

    def ready(self) -> Reply:
        ok = self.registry.loaded and not self.shutting_down
        return Reply(200 if ok else 503)

    def model_ready(self, model: str, version: str | None) -> Reply:
        try:
            self.router.resolve(model, version)
        except LeanserveError as e:
            return error_reply(e)
        return Reply(200)

    # ---- metadata, configuration, statistics ------------------------------------------------

    def server_metadata(self) -> Reply:
        return json_reply({"name": "leanserve", "version": __version__, "extensions": list(EXTENSIONS)})

    def model_metadata(self, model: str, version: str | None) -> Reply:
        try:
            mv = self.router.resolve(model, version)
            m = self.registry.get_model(model)
        except LeanserveError as e:
            return error_reply(e)
        assert mv.spec is not None
        config = mv.spec.config
        batch = [-1] if config.batching else []
        return json_reply(
            {
                "name": model,
                "versions": [str(v) for v in sorted(m.versions)],
                "platform": config.platform,
                "inputs": [
                    {"name": t.name, "datatype": t.datatype, "shape": batch + list(t.shape)} for t in config.inputs
                ],
                "outputs": [
                    {"name": t.name, "datatype": t.datatype, "shape": batch + list(t.shape)} for t in config.outputs
                ],
                "parameters": {"version": str(mv.version), "metadata": config.metadata},
            }
        )

    def model_config(self, model: str, version: str | None) -> Reply:
        try:
            mv = self.router.resolve(model, version)
        except LeanserveError as e:
            return error_reply(e)
        return json_reply(_triton_config(mv))

    def model_stats(self, model: str | None, version: str | None) -> Reply:
        try:
            if model is None:
                versions = [mv for m in self.registry.models.values() for mv in m.versions.values()]
            elif version:
                versions = [self._version(model, version)]
            else:
                versions = list(self.registry.get_model(model).versions.values())
        except LeanserveError as e:
            return error_reply(e)
        return json_reply({"model_stats": [mv.stats.triton_dict() for mv in versions]})

    def _version(self, model: str, version: str) -> ModelVersion:
        m = self.registry.get_model(model)
        if not version.isdigit() or int(version) not in m.versions:
            self.registry.get(model, version)  # raises the 404 with its hint
        return m.versions[int(version)]

    def repository_index(self) -> Reply:
        return json_reply([entry for m in self.registry.models.values() for entry in _index_entries(m)])

    def metrics(self) -> tuple[bytes, bytes]:
        return render_metrics(self._metrics)


def decompress(body: bytes, encoding: str, limit: int) -> bytes:
    """A gzip or deflate body (tritonclient's request compression), never inflated past ``limit``."""
    encoding = encoding.strip().lower()
    if encoding == "identity":
        return body
    if encoding not in ("gzip", "deflate"):
        raise UnsupportedMediaType(f"Content-Encoding {encoding!r} is not supported", hint="use gzip, deflate or none")
    inflater = zlib.decompressobj(wbits=31 if encoding == "gzip" else 15)
    try:
        data = inflater.decompress(body, limit + 1)
    except zlib.error as e:
        raise InvalidInput(f"request body is not valid {encoding} data: {e}") from None
    if len(data) > limit or inflater.unconsumed_tail:
        raise PayloadTooLarge(f"decompressed request body exceeds the limit of {limit} bytes")
    return data


def _index_entries(model: Model) -> list[dict[str, str]]:
    if not model.versions:
        return [{"name": model.name, "version": "", "state": "UNAVAILABLE", "reason": model.error}]
    return [
        {"name": model.name, "version": str(v), "state": mv.state.value, "reason": mv.reason}
        for v, mv in sorted(model.versions.items())
    ]


def _triton_config(mv: ModelVersion) -> dict[str, Any]:
    """The configuration in Triton's JSON form, so Triton users and tools recognise it."""
    assert mv.spec is not None
    c = mv.spec.config
    overrides = c.versions.get(mv.version)
    return {
        "name": c.name,
        "platform": "onnxruntime_onnx" if c.platform == "onnxruntime" else c.platform,
        "backend": c.platform,
        "version_policy": {c.version_policy.kind: _policy_body(mv)},
        "max_batch_size": c.max_batch_size or 0,
        "input": [
            {"name": t.name, "data_type": f"TYPE_{_triton_type(t.datatype)}", "dims": list(t.shape)} for t in c.inputs
        ],
        "output": [
            {"name": t.name, "data_type": f"TYPE_{_triton_type(t.datatype)}", "dims": list(t.shape)} for t in c.outputs
        ],
        "dynamic_batching": {
            "max_queue_delay_microseconds": int(c.dynamic_batching.max_queue_delay_ms * 1000),
            "preferred_batch_size": list(c.dynamic_batching.preferred_batch_sizes),
            "max_queue_size": c.dynamic_batching.max_queue_size,
        },
        "instance_group": [{"count": 1, "kind": "KIND_CPU"}],
        "default_model_filename": c.model_filename(),
        "parameters": {
            "intra_op_threads": c.runtime.intra_op_threads,
            "inter_op_threads": c.runtime.inter_op_threads,
            "providers": list(mv.runtime.providers) if mv.runtime else [],
            "graph_optimization": c.runtime.graph_optimization,
            "allow_spinning": c.runtime.allow_spinning,
        },
        "metadata": c.metadata,
        "default_version": c.default_version,
        "version": mv.version,
        "label": overrides.label if overrides else None,
        "provenance": overrides.provenance if overrides else {},
    }


def _policy_body(mv: ModelVersion) -> dict[str, Any]:
    assert mv.spec is not None
    p = mv.spec.config.version_policy
    if p.kind == "latest":
        return {"num_versions": p.num_versions}
    if p.kind == "specific":
        return {"versions": list(p.versions)}
    return {}


def _triton_type(datatype: str) -> str:
    return "STRING" if datatype == "BYTES" else datatype
