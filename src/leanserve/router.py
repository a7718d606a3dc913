"""The one path from a request to a model: name and version -> acquired version -> batcher -> result.

Both front ends (the fast HTTP protocol and the ASGI app) build a :class:`RequestContext` and call
:meth:`Router.infer`. The router acquires the version from the registry (waiting for a load when
the model is not resident), decodes and validates the body against that version's configuration,
queues it, releases the version when the answer is out, and counts every outcome once, including
requests that fail while decoding. Experiments (an alias in front of several versions) plug in
here: they choose the name and version to acquire.
"""

from __future__ import annotations

import asyncio
import itertools
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from .errors import LeanserveError, PayloadTooLarge
from .futures import call_as_future
from .protocol import (
    InferOutput,
    InferRequest,
    InferResult,
    Limits,
    decode_infer_request,
    decompress,
    parse_header_length,
    validate_request,
)
from .registry import Lease, ModelRegistry

ResultCallback = Callable[[InferResult | None, LeanserveError | None], None]
# Told of every failed request: (context, model, version as resolved or as asked, "" if neither,
# error). Called on the event loop, on error paths only; it must be cheap (the failure log buffers).
FailureHook = Callable[["RequestContext", str, str, LeanserveError], None]

_ids = itertools.count(1)


def next_request_id() -> str:
    """A process-unique id for requests that bring none (cheap: a counter, not a UUID)."""
    return f"ls-{next(_ids):x}"


# Not frozen: a frozen dataclass costs twice as much to build, and these are built per request.
# Nothing changes them after the front end made them.


@dataclass(slots=True)
class RequestContext:
    """What a front end knows of a request besides its body; the same from every front end."""

    request_id: str
    client: str | None = None
    # (lower-case name, value) of the headers that matter past the front end (an experiment's unit key).
    headers: tuple[tuple[str, str], ...] = ()
    deadline: float | None = None  # event-loop time by which the answer is useless
    authorization: str | None = field(default=None, repr=False)  # never logged


@dataclass(slots=True)
class InferBody:
    """An inference request as it came off the wire, before decoding."""

    body: bytes
    header_length: str | None = None  # Inference-Header-Content-Length
    content_encoding: str | None = None


class Router:
    def __init__(self, registry: ModelRegistry, limits: Limits) -> None:
        self.registry = registry
        self.limits = limits
        # Requests that named no model or version of this repository, by status: not per model,
        # so a client cannot create label values (and metric series) at will.
        self.unrouted: dict[int, int] = {}
        self.on_failure: FailureHook | None = None

    def infer(
        self, ctx: RequestContext, name: str, version: str | None, wire: InferBody | InferRequest, done: ResultCallback
    ) -> None:
        """Answer one request through ``done`` (on the event loop): at once if it fails early, else when run.

        ``wire`` is the body as it came off HTTP, or a request a front end decoded itself (gRPC).
        """
        start = time.perf_counter()
        try:
            if type(wire) is InferBody and len(wire.body) > self.limits.max_body_bytes:
                raise PayloadTooLarge(
                    f"request body of {len(wire.body)} bytes exceeds the limit of {self.limits.max_body_bytes}",
                    hint="send fewer items per request or raise --max-body-bytes",
                )
            lease = self.registry.acquire_now(name, version)
        except LeanserveError as e:
            self._reject(ctx, name, version, e, start, done)
            return
        if lease is None:  # not resident: load it (or wait for the load under way) off this call
            asyncio.get_running_loop().create_task(self._infer_after_load(ctx, name, version, wire, done, start))
            return
        self._run(ctx, lease, wire, done, start)

    async def infer_async(
        self, ctx: RequestContext, name: str, version: str | None, wire: InferBody | InferRequest
    ) -> InferResult:
        return await call_as_future(lambda done: self.infer(ctx, name, version, wire, done))

    async def _infer_after_load(
        self,
        ctx: RequestContext,
        name: str,
        version: str | None,
        wire: InferBody | InferRequest,
        done: ResultCallback,
        start: float,
    ) -> None:
        try:
            lease = await self.registry.acquire(name, version, ctx.deadline)
        except LeanserveError as e:
            self._reject(ctx, name, version, e, start, done)
            return
        self._run(ctx, lease, wire, done, start)

    def _run(
        self, ctx: RequestContext, lease: Lease, wire: InferBody | InferRequest, done: ResultCallback, start: float
    ) -> None:
        stats = lease.stats
        config = lease.config
        try:
            if type(wire) is InferBody:
                body = wire.body
                if wire.content_encoding:
                    body = decompress(body, wire.content_encoding, self.limits.max_body_bytes)
                request = decode_infer_request(body, parse_header_length(wire.header_length), self.limits)
            else:
                request = wire  # type: ignore[assignment]
            rows = validate_request(request, config.inputs, config.outputs, config.max_batch_size or 0)
        except LeanserveError as e:
            self.registry.release(lease)
            stats.record_failure(e.status, time.perf_counter() - start)
            if self.on_failure is not None:
                self.on_failure(ctx, lease.name, str(lease.version), e)
            done(None, e)
            return
        stats.in_flight += 1

        def finish(outputs: dict[str, np.ndarray] | None, error: LeanserveError | None) -> None:
            stats.in_flight -= 1
            self.registry.release(lease)
            if error is not None:
                stats.record_failure(error.status, time.perf_counter() - start)
                if self.on_failure is not None:
                    self.on_failure(ctx, lease.name, str(lease.version), error)
                done(None, error)
                return
            assert outputs is not None
            stats.record_request("success", time.perf_counter() - start)
            done(_result(lease, request, outputs), None)

        lease.batcher.submit({i.name: i.data for i in request.inputs}, rows, finish)

    def _reject(
        self,
        ctx: RequestContext,
        name: str,
        version: str | None,
        error: LeanserveError,
        start: float,
        done: ResultCallback,
    ) -> None:
        stats = self.registry.stats_of(name, version)
        if stats is None:
            self.unrouted[error.status] = self.unrouted.get(error.status, 0) + 1
        else:
            stats.record_failure(error.status, time.perf_counter() - start)
        if self.on_failure is not None:
            self.on_failure(ctx, name, str(stats.version) if stats is not None else version or "", error)
        done(None, error)


def _result(lease: Lease, request: InferRequest, outputs: dict[str, np.ndarray]) -> InferResult:
    if request.outputs is None:
        selected = [InferOutput(name, array, request.binary_data_output) for name, array in outputs.items()]
    else:
        selected = [
            InferOutput(o.name, outputs[o.name], o.binary_data or request.binary_data_output, dict(o.parameters))
            for o in request.outputs
        ]
    return InferResult(
        model_name=lease.name,
        model_version=str(lease.version),
        outputs=selected,
        id=request.id,
        parameters=request.parameters,
    )


__all__ = ["FailureHook", "InferBody", "RequestContext", "ResultCallback", "Router", "next_request_id"]
