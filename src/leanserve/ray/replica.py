"""One model's Ray Serve replica: leanserve's own registry, router and dynamic batcher, for that model.

Each replica loads its model's versions within the memory budget (per replica), batches the
requests Ray routes to it, and answers them as ``leanserve serve`` would: the same handlers, so
the same codecs, errors and statistics. The ingress (:mod:`.ingress`) calls :meth:`infer` for
inference and :meth:`call` for every other model endpoint.
"""

from __future__ import annotations

import contextlib
import os
from dataclasses import replace
from pathlib import Path
from typing import Any

from ..protocol import Limits
from ..registry import ModelRegistry, RegistryOptions
from ..router import InferBody, RequestContext, Router, next_request_id
from ..server.asgi import build_app
from ..server.auth import Tokens
from ..server.handlers import Handlers
from .forward import Answer, Call, call_asgi

REPLICA_HEADER = "x-leanserve-replica"  # which replica answered: Ray's id of it


def _replica_id() -> str:
    with contextlib.suppress(Exception):
        from ray import serve

        return str(serve.get_replica_context().replica_id.unique_id)
    return str(os.getpid())


class ModelReplica:
    """The body of one model's deployment (decorated by :func:`.app.build_application`)."""

    async def __init__(  # type: ignore[misc]  # Ray Serve awaits an async constructor
        self,
        repository: str,
        model: str,
        options: RegistryOptions,
        tokens: Tokens | None = None,
        limits: Limits | None = None,
    ) -> None:
        self.model = model
        self.registry = ModelRegistry(Path(repository), replace(options, models=frozenset({model})))
        self.router = Router(self.registry, limits or Limits())
        self.handlers = Handlers(self.registry, self.router, tokens)
        self.app = build_app(self.handlers)
        self.replica = _replica_id()
        await self.registry.load_all()

    async def infer(self, call: Call, version: str | None) -> Answer:
        headers = dict(call.headers)
        unit_headers = {n.decode() for n in self.router.unit_headers}
        ctx = RequestContext(
            headers.get("x-request-id", "")[:128] or next_request_id(),
            call.client,
            tuple((k, v) for k, v in call.headers if k in unit_headers),
            authorization=headers.get("authorization"),
        )
        wire = InferBody(call.body, headers.get("inference-header-content-length"), headers.get("content-encoding"))
        reply = await self.handlers.infer_async(ctx, self.model, version, wire)
        out = [("content-type", reply.content_type.decode())]
        out += [(k.decode("latin-1"), v.decode("latin-1")) for k, v in reply.headers]
        if reply.header_length is not None:
            out.append(("inference-header-content-length", str(reply.header_length)))
        return Answer(reply.status, (*out, (REPLICA_HEADER, self.replica)), reply.body)

    async def call(self, call: Call) -> Answer:
        answer = await call_asgi(self.app, call)
        return Answer(answer.status, (*answer.headers, (REPLICA_HEADER, self.replica)), answer.body)

    def metrics(self) -> str:
        return self.handlers.metrics()[0].decode()

    def index(self) -> list[dict[str, Any]]:
        return self.handlers.repository_index_docs(False)

    def ready(self) -> bool:
        return self.handlers.is_ready()

    async def __del__(self) -> None:  # Ray Serve awaits it at a graceful shutdown
        await self.registry.close()
