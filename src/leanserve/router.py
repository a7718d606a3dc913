"""The one path from a request to a model: name and version -> acquired version -> batcher -> result.

Both front ends (the fast HTTP protocol and the ASGI app) build a :class:`RequestContext` and call
:meth:`Router.infer`. The router acquires the version from the registry (waiting for a load when
the model is not resident), decodes and validates the body against that version's configuration,
queues it, releases the version when the answer is out, and counts every outcome once, including
requests that fail while decoding.

Experiments plug in here. An experiment's name is an alias called like a model; the one check a
direct request pays for them is a dictionary lookup of its name. An alias request is decoded
first (its unit may be a request parameter), the experiment chooses an arm, and the request goes
on to that model version as a direct request would; its answer names the alias and the arm, and
its latency and outcome are recorded for the arm. A shadow's candidate gets a copy of the decoded
request after the control's answer has gone out, and (with ``shadow_yield``) only in a moment when
the server has nothing else to do, so that copies take the control's idle time, not its own.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from .admission import TIMEOUT_PARAMETER, timeout_deadline
from .errors import InvalidInput, LeanserveError, PayloadTooLarge, ServerError
from .experiments import Comparison, compare_outputs
from .experiments.alias import ARM_PARAMETER, UNIT_HEADER, Alias
from .experiments.assignment import Mirror
from .experiments.shadow import ShadowQueue
from .futures import call_as_future
from .processing import Processor
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
from .stats import ModelStats, outcome_of

ResultCallback = Callable[[InferResult | None, LeanserveError | None], None]
# Told of every failed request: (context, model, version as resolved or as asked, "" if neither,
# error). Called on the event loop, on error paths only; it must be cheap (the failure log buffers).
FailureHook = Callable[["RequestContext", str, str, LeanserveError], None]

log = logging.getLogger("leanserve.router")
_ids = itertools.count(1)


def next_request_id() -> str:
    """A process-unique id for requests that bring none (cheap: a counter, not a UUID)."""
    return f"ls-{next(_ids):x}"


# Not frozen: a frozen dataclass costs twice as much to build, and these are built per request.
# Nothing but the router's alias path changes them after the front end made them.


@dataclass(slots=True)
class RequestContext:
    """What a front end knows of a request besides its body; the same from every front end."""

    request_id: str
    client: str | None = None
    # (lower-case name, value) of the headers that matter past the front end (an experiment's unit key).
    headers: tuple[tuple[str, str], ...] = ()
    deadline: float | None = None  # event-loop time by which the answer is useless
    gone: bool = False  # the client hung up: the batcher drops the request before the engine
    authorization: str | None = field(default=None, repr=False)  # never logged
    # Through an experiment alias: the alias, and the arm serving the request ("model:version"),
    # set by the router for the response header and the failure log.
    experiment: str = ""
    arm: str = ""


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
        # Experiments by alias (the server's experiments fill it), and the request headers that
        # carry their units: the front ends capture these and no other header for the router.
        self.aliases: dict[str, Alias] = {}
        self.unit_headers: set[bytes] = {UNIT_HEADER.encode()}
        self._loading: set[asyncio.Task[None]] = set()  # requests waiting for their model to load
        self.shadows = ShadowQueue()  # shadow copies waiting for an idle moment

    def infer(
        self, ctx: RequestContext, name: str, version: str | None, wire: InferBody | InferRequest, done: ResultCallback
    ) -> None:
        """Answer one request through ``done`` (on the event loop): at once if it fails early, else when run.

        ``wire`` is the body as it came off HTTP, or a request a front end decoded itself (gRPC).
        """
        start = time.perf_counter()
        alias = self.aliases.get(name)
        if alias is not None:
            self._infer_alias(alias, ctx, version, wire, done, start)
            return
        self._route(ctx, name, version, wire, done, start)

    def _route(
        self,
        ctx: RequestContext,
        name: str,
        version: str | None,
        wire: InferBody | InferRequest,
        done: ResultCallback,
        start: float,
    ) -> None:
        """Acquire the model version (loading it off this call when it is not resident), then run."""
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
        if lease is None:
            task = asyncio.get_running_loop().create_task(self._infer_after_load(ctx, name, version, wire, done, start))
            # The loop keeps only weak references to tasks: hold this one until it is done.
            self._loading.add(task)
            task.add_done_callback(self._loading.discard)
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
        batcher = lease.batcher
        if isinstance(batcher, Processor):  # a handler, ragged inputs or pipeline steps: the one check plain models pay
            self._run_processed(ctx, lease, batcher, wire, done, start)
            return
        stats = lease.stats
        config = lease.config
        if batcher.overloaded:  # a standing queue: refuse what would wait too long, before decoding it
            refused = batcher.refusal()
            if refused is not None:
                self.registry.release(lease)
                self._failed(ctx, stats, lease.name, str(lease.version), refused, start, done)
                return
        try:
            request = self._decode(wire) if isinstance(wire, InferBody) else wire
            rows = validate_request(request, config.inputs, config.outputs, config.max_batch_size or 0)
            if request.parameters and TIMEOUT_PARAMETER in request.parameters:
                deadline_from_timeout(ctx, request.parameters)
        except Exception as e:
            self._unreadable(ctx, lease, e, start, done)
            return
        stats.in_flight += 1
        finish = self._finisher(ctx, lease, request, start, done)
        tensors = request.inputs
        # Most models take one input: its dict without a comprehension.
        inputs = {tensors[0].name: tensors[0].data} if len(tensors) == 1 else {i.name: i.data for i in tensors}
        batcher.submit(inputs, rows, finish, ctx)

    def _run_processed(
        self,
        ctx: RequestContext,
        lease: Lease,
        processor: Processor,
        wire: InferBody | InferRequest,
        done: ResultCallback,
        start: float,
    ) -> None:
        """:meth:`_run` for a processed version: its public signature, and the request's id and deadline."""
        stats = lease.stats
        try:
            request = self._decode(wire) if isinstance(wire, InferBody) else wire
            rows, entry = processor.validate(request)
            if request.parameters and TIMEOUT_PARAMETER in request.parameters:
                deadline_from_timeout(ctx, request.parameters)
        except Exception as e:
            self._unreadable(ctx, lease, e, start, done)
            return
        stats.in_flight += 1
        inputs = {i.name: i.data for i in request.inputs}
        finish = self._finisher(ctx, lease, request, start, done)
        processor.submit(ctx.request_id, inputs, rows, ctx.deadline, finish, entry)

    def _unreadable(
        self, ctx: RequestContext, lease: Lease, error: Exception, start: float, done: ResultCallback
    ) -> None:
        """Answer a request that failed while being read, and release its version: a bug in a codec
        or a handler's validation must still answer (500, logged) rather than leave the caller hanging."""
        if not isinstance(error, LeanserveError):
            log.exception("reading a request for model %s", lease.name, exc_info=error)
            error = ServerError(f"internal error while reading the request: {type(error).__name__}")
        self.registry.release(lease)
        self._failed(ctx, lease.stats, lease.name, str(lease.version), error, start, done)

    def _finisher(
        self, ctx: RequestContext, lease: Lease, request: InferRequest, start: float, done: ResultCallback
    ) -> Callable[[dict[str, np.ndarray] | None, LeanserveError | None], None]:
        """The callback that ends an accepted request: release the version, count, answer."""
        stats = lease.stats

        def finish(outputs: dict[str, np.ndarray] | None, error: LeanserveError | None) -> None:
            stats.in_flight -= 1
            self.registry.release(lease)
            if error is not None:
                self._failed(ctx, stats, lease.name, str(lease.version), error, start, done)
                return
            assert outputs is not None
            stats.record_success(time.perf_counter() - start)
            done(_result(lease, request, outputs), None)

        return finish

    def _decode(self, wire: InferBody) -> InferRequest:
        body = wire.body
        if wire.content_encoding:
            body = decompress(body, wire.content_encoding, self.limits.max_body_bytes)
        return decode_infer_request(body, parse_header_length(wire.header_length), self.limits)

    # ---- experiments ----------------------------------------------------------------------------

    def _infer_alias(
        self,
        alias: Alias,
        ctx: RequestContext,
        version: str | None,
        wire: InferBody | InferRequest,
        done: ResultCallback,
        start: float,
    ) -> None:
        # Every request through an alias pays for what is here (measured in benchmarks/experiments.py):
        # arms go by index, labels are made once, and the common success path makes no call it can avoid.
        if version is not None:
            error = InvalidInput(
                f"{alias.name!r} is an experiment alias: it has no versions of its own",
                hint=f"call /v2/models/{alias.name}/infer, or a model version by its own name",
            )
            self._reject(ctx, alias.name, version, error, start, done)
            return
        request: InferRequest | None = None
        if type(wire) is not InferBody:
            request = wire  # type: ignore[assignment]
        elif len(wire.body) <= self.limits.max_body_bytes:
            try:  # noqa: SIM105 -- contextlib.suppress costs a microsecond here
                request = self._decode(wire)
            except LeanserveError:
                pass  # the arm's own decode fails the same way, and counts it there
        parameters = request.parameters if request is not None else None
        # The unit is looked for only when the request carries something it could be in: hashing
        # is for requests that send one (without, the arm is a random draw).
        unit = alias.unit(ctx.headers, parameters) if ctx.headers or parameters else None
        i = alias.recorder.assign(unit)
        model = alias.models[i]
        version = alias.versions[i]
        label = alias.labels[i]
        ctx.experiment = alias.name
        ctx.arm = label or self._label(model, version)
        if alias.plain:  # no feedback and no shadow: the common answer, with the least to do per request
            plain = _plain_answer(alias, i, ctx, start, done)
            self._route(ctx, model, version, request if request is not None else wire, plain, start)
            return
        key = response_id = None
        if alias.feedback:
            # The feedback key: the unit when there is one (units are what the experiment assigns),
            # else the response id, which the answer then carries.
            response_id = request.id if request is not None and request.id else ctx.request_id
            key = unit if unit is not None else response_id
        answered = self._answer(alias, i, ctx, start, done, request, unit, key, response_id)
        # Not decoded (too large, or malformed): the direct path says why, and counts it for the arm.
        self._route(ctx, model, version, request if request is not None else wire, answered, start)

    def _answer(
        self,
        alias: Alias,
        i: int,
        ctx: RequestContext,
        start: float,
        done: ResultCallback,
        request: InferRequest | None,
        unit: str | None,
        key: str | None,
        response_id: str | None,
    ) -> ResultCallback:
        """:func:`_plain_answer` for an experiment that keeps feedback keys or sends shadow copies."""

        def answered(result: InferResult | None, error: LeanserveError | None) -> None:
            recorder = alias.recorder
            if result is not None:
                recorder.record(i, time.perf_counter() - start, True, key)
                alias.successes[i] += 1
                result.model_name = alias.name
                if response_id is not None:
                    result.id = response_id
                label = alias.labels[i]
                if label is not None and not result.parameters:
                    result.parameters = alias.parameters[i]
                else:
                    arm = ctx.arm = label or f"{alias.models[i]}:{result.model_version}"
                    result.parameters = {**result.parameters, ARM_PARAMETER: arm}
            else:
                status = error.status  # type: ignore[union-attr]
                recorder.record(i, time.perf_counter() - start, status < 500, key)
                alias.count_failure(i, status)
            done(result, error)
            # After the answer is out: the copy costs the control nothing but the CPU it shares.
            if alias.shadow and request is not None:
                self._mirror(alias, ctx, unit, request, result)

        return answered

    def _label(self, model: str, version: str | None) -> str:
        """``model:version`` of an arm, its default version resolved (a failed answer names it too)."""
        if version is None:
            stats = self.registry.stats_of(model, None)
            version = str(stats.version) if stats is not None else "default"
        return f"{model}:{version}"

    def _mirror(
        self, alias: Alias, ctx: RequestContext, unit: str | None, request: InferRequest, control: InferResult | None
    ) -> None:
        """Queue a shadow copy of a request the control answered, unless the policy sheds it.

        With ``shadow_yield`` (the default) the copy waits for an idle moment (:mod:`.experiments.shadow`)
        and is shed if none comes; without it the copy is sent at once."""
        if alias.recorder.mirror(unit, alias.copies_pending) is not Mirror.SEND:
            return
        alias.copies_pending += 1
        copy = _ShadowCopy(self, alias, ctx, request, control, time.perf_counter())
        if alias.shadow_yield:
            self.shadows.submit(copy)
        else:
            copy.run()

    def _send_copy(self, alias: Alias, ctx: RequestContext, request: InferRequest, control: InferResult | None) -> None:
        recorder = alias.recorder
        recorder.sent()
        exp = alias.experiment
        arm = alias.arms[1]  # a shadow's candidate
        version = alias.versions[1]
        copy = RequestContext(
            ctx.request_id,
            ctx.client,
            ctx.headers,
            experiment=alias.name,
            arm=f"{alias.labels[1] or self._label(arm.model, version)} shadow",
        )
        start = time.perf_counter()

        def compared(result: InferResult | None, error: LeanserveError | None) -> None:
            alias.copies_pending -= 1
            status = 200 if error is None else error.status
            recorder.record(1, time.perf_counter() - start, status < 500)
            alias.count_copy(status)
            # The copy was counted by the candidate's version, as a request of no protocol's.
            stats = self.registry.stats_of(arm.model, result.model_version if result is not None else version)
            if stats is not None:
                stats.count_protocol("shadow", outcome_of(status))
            if control is None:
                return  # the control failed: nothing to compare with
            if result is None:
                exp.record_comparison(_NO_ANSWER)  # an error never agrees with an answer
            else:
                exp.record_comparison(compare_outputs(_outputs(control), _outputs(result)))

        self._route(copy, arm.model, version, request, compared, start)

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
        resolved = str(stats.version) if stats is not None else version or ""
        self._failed(ctx, stats, name, resolved, error, start, done)

    def _failed(
        self,
        ctx: RequestContext,
        stats: ModelStats | None,
        name: str,
        version: str,
        error: LeanserveError,
        start: float,
        done: ResultCallback,
    ) -> None:
        """Every failed request passes here once: counted, told to the failure log, answered."""
        if stats is not None:
            stats.record_failure(error.status, time.perf_counter() - start)
        if self.on_failure is not None:
            self.on_failure(ctx, name, version, error)
        done(None, error)


def deadline_from_timeout(ctx: RequestContext, parameters: dict[str, object]) -> None:
    """Tighten ``ctx.deadline`` to the request's ``timeout`` parameter (Triton's, in microseconds)."""
    deadline = timeout_deadline(parameters, asyncio.get_running_loop().time())
    if deadline is not None and (ctx.deadline is None or deadline < ctx.deadline):
        ctx.deadline = deadline


_NO_ANSWER = Comparison(agree=False, similarity=0.0, max_abs_error=float("inf"))


class _ShadowCopy:
    """A shadow copy waiting in the router's :class:`~.experiments.shadow.ShadowQueue`."""

    __slots__ = ("alias", "control", "ctx", "queued_at", "request", "router")

    def __init__(
        self,
        router: Router,
        alias: Alias,
        ctx: RequestContext,
        request: InferRequest,
        control: InferResult | None,
        queued_at: float,
    ) -> None:
        self.router = router
        self.alias = alias
        self.ctx = ctx
        self.request = request
        self.control = control
        self.queued_at = queued_at

    def ready(self) -> bool:
        """The control has nothing in flight: its engine is not busy with the requests users wait for."""
        alias = self.alias
        stats = self.router.registry.stats_of(alias.arms[0].model, alias.versions[0])
        return stats is None or stats.in_flight == 0

    def run(self) -> None:
        self.router._send_copy(self.alias, self.ctx, self.request, self.control)

    def shed(self) -> None:
        self.alias.copies_pending -= 1
        self.alias.recorder.shed()


def _plain_answer(alias: Alias, i: int, ctx: RequestContext, start: float, done: ResultCallback) -> ResultCallback:
    """The callback ending a request that arm ``i`` of a split or canary answers (no feedback, no
    shadow): count it for the arm and name the alias and the arm in the answer. Made here rather
    than in :meth:`Router._infer_alias` so that it closes over these five names only: a closure's
    variables are cells made at every call of the function that defines it, on every path."""

    def answered(result: InferResult | None, error: LeanserveError | None) -> None:
        if result is not None:
            alias.recorder.record(i, time.perf_counter() - start, True)
            alias.successes[i] += 1
            result.model_name = alias.name
            label = alias.labels[i]
            if label is not None and not result.parameters:
                result.parameters = alias.parameters[i]  # made once: {"leanserve_arm": label}
            else:
                arm = ctx.arm = label or f"{alias.models[i]}:{result.model_version}"
                result.parameters = {**result.parameters, ARM_PARAMETER: arm}
        else:
            status = error.status  # type: ignore[union-attr]
            alias.recorder.record(i, time.perf_counter() - start, status < 500)
            alias.count_failure(i, status)
        done(result, error)

    return answered


def _outputs(result: InferResult) -> dict[str, np.ndarray]:
    return {o.name: o.data for o in result.outputs}


def _result(lease: Lease, request: InferRequest, outputs: dict[str, np.ndarray]) -> InferResult:
    if request.outputs is None:
        binary = request.binary_data_output
        if len(outputs) == 1:  # most models answer with one output: its list without a comprehension
            for name, array in outputs.items():
                selected = [InferOutput(name, array, binary)]
        else:
            selected = [InferOutput(name, array, binary) for name, array in outputs.items()]
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
