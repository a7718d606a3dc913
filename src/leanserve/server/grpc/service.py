"""``inference.GRPCInferenceService`` on ``grpc.aio``: thin methods over the handlers and the router.

Each method picks its arguments out of the message, calls what the HTTP routes call
(:class:`~leanserve.server.handlers.Handlers`, :meth:`~leanserve.router.Router.infer`) and puts the
answer into a message (:mod:`.messages`, :mod:`.codec`). Errors are translated in one place,
:func:`_translated`, into the status codes of :mod:`.status` with HTTP's messages. Tokens come as
``authorization: Bearer <token>`` metadata and are checked where HTTP checks them.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any, Final

import grpc
from tritonclient.grpc import service_pb2

from ... import __version__
from ...errors import InvalidInput, LeanserveError, ModelNotFound, ServerError, UsageError
from ...futures import call_as_future
from ...protocol import InferResult, Limits
from ...router import RequestContext, ResultCallback, next_request_id
from ...stats import outcome_of
from ..auth import require_inference
from ..handlers import EXTENSIONS, Handlers
from . import messages
from .codec import decode_infer_request, encode_infer_result
from .status import status_code, trailing_metadata

log = logging.getLogger("leanserve.server.grpc")

SERVICE: Final = "inference.GRPCInferenceService"
Context = grpc.aio.ServicerContext[Any, Any]
Method = Callable[[Any, Context], Awaitable[Any]]

# Methods of the service that leanserve does not serve, with what to do instead.
_UNSERVED: Final[dict[str, str]] = {
    "SystemSharedMemoryStatus": "shared memory is not supported; send tensors in the request",
    "SystemSharedMemoryRegister": "shared memory is not supported; send tensors in the request",
    "SystemSharedMemoryUnregister": "shared memory is not supported; send tensors in the request",
    "CudaSharedMemoryStatus": "shared memory is not supported; send tensors in the request",
    "CudaSharedMemoryRegister": "shared memory is not supported; send tensors in the request",
    "CudaSharedMemoryUnregister": "shared memory is not supported; send tensors in the request",
    "TraceSetting": "tracing is not supported",
    "LogSettings": "log settings are not served; start the server with --log-level",
}
# Parameters of a load request that Triton uses to override a model's configuration or files.
_LOAD_OVERRIDES: Final = "config"
_LOAD_FILE_PREFIX: Final = "file:"


class GrpcFrontEnd:
    """The gRPC server: listens on ``host:port`` and serves the service on the running event loop."""

    def __init__(self, handlers: Handlers, limits: Limits) -> None:
        self.handlers = handlers
        self.router = handlers.router
        self.registry = handlers.registry
        self.tokens = handlers.tokens
        self.limits = limits
        self._server: grpc.aio.Server | None = None
        self.port = 0

    async def start(self, host: str, port: int, reuse_port: bool = False) -> int:
        """Listen and serve; returns the bound port (chosen by the system when ``port`` is 0).

        ``reuse_port``: share the port with the other workers of ``serve --workers`` (SO_REUSEPORT)."""
        server = grpc.aio.server(
            options=[
                # The body limit, enforced by grpcio before a message is decoded (RESOURCE_EXHAUSTED).
                ("grpc.max_receive_message_length", self.limits.max_body_bytes),
                # grpcio shares ports by default (SO_REUSEPORT): a port in use would not be an error.
                ("grpc.so_reuseport", 1 if reuse_port else 0),
            ]
        )
        server.add_generic_rpc_handlers((self._service(),))
        address = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
        try:
            self.port = server.add_insecure_port(address)
        except RuntimeError as e:  # grpcio's way of saying the address cannot be bound
            raise UsageError(f"cannot listen for gRPC on {address}: {e}", hint="choose another --grpc-port") from e
        await server.start()
        self._server = server
        log.info("listening on grpc://%s", f"{address.rsplit(':', 1)[0]}:{self.port}")
        return self.port

    async def stop(self, grace: float) -> None:
        """Refuse new calls at once; let those in flight finish for up to ``grace`` seconds, then cancel them."""
        if self._server is not None:
            await self._server.stop(grace)
            self._server = None

    # ---- the service ------------------------------------------------------------------------

    def _service(self) -> grpc.GenericRpcHandler:
        pb = service_pb2
        served: dict[str, tuple[Method, Any]] = {
            "ServerLive": (self.server_live, pb.ServerLiveRequest),
            "ServerReady": (self.server_ready, pb.ServerReadyRequest),
            "ModelReady": (self.model_ready, pb.ModelReadyRequest),
            "ServerMetadata": (self.server_metadata, pb.ServerMetadataRequest),
            "ModelMetadata": (self.model_metadata, pb.ModelMetadataRequest),
            "ModelInfer": (self.model_infer, pb.ModelInferRequest),
            "ModelConfig": (self.model_config, pb.ModelConfigRequest),
            "ModelStatistics": (self.model_statistics, pb.ModelStatisticsRequest),
            "RepositoryIndex": (self.repository_index, pb.RepositoryIndexRequest),
            "RepositoryModelLoad": (self.repository_model_load, pb.RepositoryModelLoadRequest),
            "RepositoryModelUnload": (self.repository_model_unload, pb.RepositoryModelUnloadRequest),
        }
        handlers: dict[str, grpc.RpcMethodHandler[Any, Any]] = {
            name: grpc.unary_unary_rpc_method_handler(
                _translated(method), request_deserializer=request.FromString, response_serializer=_serialize
            )
            for name, (method, request) in served.items()
        }
        for name, why in _UNSERVED.items():
            handlers[name] = grpc.unary_unary_rpc_method_handler(_unimplemented(name, why))
        handlers["ModelStreamInfer"] = grpc.stream_stream_rpc_method_handler(
            _unimplemented_stream("ModelStreamInfer is not served", "send each request with ModelInfer")
        )
        return grpc.method_handlers_generic_handler(SERVICE, handlers)

    async def server_live(self, request: Any, context: Context) -> Any:
        return service_pb2.ServerLiveResponse(live=True)

    async def server_ready(self, request: Any, context: Context) -> Any:
        return service_pb2.ServerReadyResponse(ready=self.handlers.is_ready())

    async def server_metadata(self, request: Any, context: Context) -> Any:
        return service_pb2.ServerMetadataResponse(name="leanserve", version=__version__, extensions=EXTENSIONS)

    async def model_ready(self, request: Any, context: Context) -> Any:
        self._authorize(context)
        try:
            snap = self.handlers.describe(request.name, request.version or None)
        except ModelNotFound:
            # As Triton answers: not ready rather than an error, so that is_model_ready() is a bool.
            return service_pb2.ModelReadyResponse(ready=False)
        return service_pb2.ModelReadyResponse(ready=snap.ready)

    async def model_metadata(self, request: Any, context: Context) -> Any:
        self._authorize(context)
        return messages.model_metadata(self.handlers.model_metadata_doc(request.name, request.version or None))

    async def model_config(self, request: Any, context: Context) -> Any:
        self._authorize(context)
        return messages.model_config(self.handlers.model_config_doc(request.name, request.version or None))

    async def model_statistics(self, request: Any, context: Context) -> Any:
        """Triton's statistics: every model's (no name), every version's of a model, or one version's."""
        self._authorize(context)
        docs = self.handlers.model_stats_docs(request.name or None, request.version or None)
        return messages.model_statistics(docs)

    async def repository_index(self, request: Any, context: Context) -> Any:
        self._authorize(context)
        return messages.repository_index(self.handlers.repository_index_docs(request.ready))

    async def repository_model_load(self, request: Any, context: Context) -> Any:
        overrides = [k for k in request.parameters if k == _LOAD_OVERRIDES or k.startswith(_LOAD_FILE_PREFIX)]
        if overrides:
            raise InvalidInput(
                f"loading {request.model_name!r} with {overrides[0]!r} is not supported: "
                "leanserve loads a model from its files in the repository",
                hint="write the configuration to model.toml and the files to the model's folder, then load it",
            )
        await self.handlers.load(request.model_name, _authorization(context))
        return service_pb2.RepositoryModelLoadResponse()

    async def repository_model_unload(self, request: Any, context: Context) -> Any:
        await self.handlers.unload(request.model_name, _authorization(context))
        return service_pb2.RepositoryModelUnloadResponse()

    async def model_infer(self, message: Any, context: Context) -> Any:
        authorization, headers = _request_metadata(context, self.router.unit_headers)
        if self.tokens.inference is not None:
            require_inference(self.tokens, authorization)
        name, version = message.model_name, message.model_version or None
        start = time.perf_counter()
        try:
            request = decode_infer_request(message, self.limits)
        except LeanserveError as e:
            self._count_refused(name, version, e, start)
            raise
        remaining = context.time_remaining()
        ctx = RequestContext(
            request.id or next_request_id(),
            context.peer(),
            headers,  # an experiment's unit, as HTTP's header carries it
            # gRPC's deadline in event-loop time: how long a request may wait for its model to load.
            deadline=None if remaining is None else asyncio.get_running_loop().time() + remaining,
            authorization=authorization,
        )

        def infer(done: ResultCallback) -> None:
            def counted(result: InferResult | None, error: LeanserveError | None) -> None:
                self._count_grpc(ctx, name, version, result, error)
                done(result, error)

            self.router.infer(ctx, name, version, request, counted)

        try:
            result: InferResult = await call_as_future(infer)
        except asyncio.CancelledError:
            ctx.gone = True  # the client cancelled the call: the batcher drops the request before the engine
            raise
        return encode_infer_result(result)

    def _count_grpc(
        self,
        ctx: RequestContext,
        name: str,
        version: str | None,
        result: InferResult | None,
        error: LeanserveError | None,
    ) -> None:
        """Tell the version that counted this request that it came over gRPC (the ``protocol`` label)."""
        if ctx.arm:  # through an experiment alias: the arm's version counted it ("model:version")
            name, _, version = ctx.arm.rpartition(":")
        elif result is not None:
            version = result.model_version  # the default version, resolved
        stats = self.registry.stats_of(name, version)
        if stats is not None:
            stats.count_protocol("grpc", "success" if error is None else outcome_of(error.status))

    def _authorize(self, context: Context) -> None:
        """Model data needs the inference token when the server has one (--token), as over HTTP."""
        if self.tokens.inference is not None:
            require_inference(self.tokens, _authorization(context))

    def _count_refused(self, name: str, version: str | None, error: LeanserveError, start: float) -> None:
        """Count a request that failed to decode, as the router counts HTTP's (which it decodes itself).

        Router.infer takes a decoded request from a front end like this one, so a request that never
        becomes one is counted here, by the router's rule: against the version it names, or apart
        when it names none of the repository.
        """
        stats = self.registry.stats_of(name, version)
        if stats is None:
            self.router.unrouted[error.status] = self.router.unrouted.get(error.status, 0) + 1
        else:
            outcome = outcome_of(error.status)
            stats.record_request(outcome, time.perf_counter() - start)
            stats.count_protocol("grpc", outcome)


def _translated(method: Method) -> Method:
    """``method`` with leanserve's errors, and any other exception, answered as gRPC status codes."""

    async def call(request: Any, context: Context) -> Any:
        try:
            return await method(request, context)
        except LeanserveError as e:
            error = e
        except Exception as e:  # a bug: answered as INTERNAL, logged with its traceback
            log.exception("gRPC %s failed", getattr(method, "__name__", "method"))
            error = ServerError(f"internal error: {type(e).__name__}: {e}")
        await context.abort(status_code(error), str(error), trailing_metadata(error))

    return call


def _unimplemented(name: str, why: str) -> Callable[[bytes, Context], Awaitable[bytes]]:
    async def call(request: bytes, context: Context) -> bytes:
        await context.abort(grpc.StatusCode.UNIMPLEMENTED, f"{name} is not served by leanserve: {why}")

    return call


def _unimplemented_stream(message: str, hint: str) -> Callable[[Any, Context], Awaitable[None]]:
    async def call(requests: Any, context: Context) -> None:
        await context.abort(grpc.StatusCode.UNIMPLEMENTED, f"{message} ({hint})")

    return call


def _authorization(context: Context) -> str | None:
    for key, value in context.invocation_metadata() or ():
        if key == "authorization":
            return value if isinstance(value, str) else value.decode("latin-1")
    return None


def _request_metadata(context: Context, wanted: set[bytes]) -> tuple[str | None, tuple[tuple[str, str], ...]]:
    """The call's token, and the (name, value) of the metadata the router asks for (experiments'
    unit headers): what HTTP's front end takes from the request's headers. gRPC's keys are lower-case."""
    authorization = None
    headers: list[tuple[str, str]] = []
    for key, value in context.invocation_metadata() or ():
        if not isinstance(value, str):
            continue  # binary metadata ("-bin" keys) carries neither
        if key == "authorization":
            authorization = value
        elif key.encode() in wanted:
            headers.append((key, value))
    return authorization, tuple(headers)


def _serialize(message: Any) -> bytes:
    data: bytes = message.SerializeToString()
    return data


__all__ = ["SERVICE", "GrpcFrontEnd"]
