"""``inference.GRPCInferenceService``: thin methods over the handlers and the router.

Each method picks its arguments out of the message, calls what the HTTP routes call
(:class:`~leanserve.server.handlers.Handlers`, :meth:`~leanserve.router.Router.infer`) and puts the
answer into a message (:mod:`.messages`, :mod:`.codec`). Errors are translated in one place,
:func:`_status_of`, into the status codes of :mod:`.status` with HTTP's messages. Tokens come as
``authorization: Bearer <token>`` metadata and are checked where HTTP checks them. The calls come
from :mod:`.transport` (HTTP/2 on the event loop) as bytes, and go back as bytes or a status.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any, Final

from google.protobuf.message import DecodeError
from tritonclient.grpc import service_pb2

from ... import __version__
from ...errors import InvalidInput, LeanserveError, ModelNotFound, ServerError, UsageError
from ...protocol import InferResult, Limits
from ...router import RequestContext, next_request_id
from ...stats import outcome_of
from ..auth import require_inference
from ..handlers import EXTENSIONS, Handlers
from . import messages
from .codec import decode_infer_request, encode_infer_result
from .status import status_code, trailing_metadata
from .transport import Call, GrpcServer, Handler, Reply
from .wire import UNIMPLEMENTED, Status

log = logging.getLogger("leanserve.server.grpc")

SERVICE: Final = "inference.GRPCInferenceService"
Method = Callable[[Any, Call], Any]
AsyncMethod = Callable[[Any, Call], Awaitable[Any]]

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
    "ModelStreamInfer": "streaming is not served; send each request with ModelInfer",
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
        self._methods = self._service()
        # The body limit, enforced before a message is decoded (RESOURCE_EXHAUSTED).
        self._server = GrpcServer(self._methods.get, limits.max_body_bytes)
        self.port = 0

    async def start(self, host: str, port: int, reuse_port: bool = False) -> int:
        """Listen and serve; returns the bound port (chosen by the system when ``port`` is 0).

        ``reuse_port``: share the port with the other workers of ``serve --workers`` (SO_REUSEPORT)."""
        address = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
        try:
            self.port = await self._server.listen(host, port, reuse_port)
        except OSError as e:
            raise UsageError(f"cannot listen for gRPC on {address}: {e}", hint="choose another --grpc-port") from e
        log.info("listening on grpc://%s", f"{address.rsplit(':', 1)[0]}:{self.port}")
        return self.port

    async def stop(self, grace: float) -> None:
        """Refuse new calls at once; let those in flight finish for up to ``grace`` seconds, then cancel them."""
        await self._server.stop(grace)

    # ---- the service ------------------------------------------------------------------------

    def _service(self) -> dict[bytes, Handler | Status]:
        pb = service_pb2
        served: dict[str, tuple[Method, Any]] = {
            "ServerLive": (self.server_live, pb.ServerLiveRequest),
            "ServerReady": (self.server_ready, pb.ServerReadyRequest),
            "ModelReady": (self.model_ready, pb.ModelReadyRequest),
            "ServerMetadata": (self.server_metadata, pb.ServerMetadataRequest),
            "ModelMetadata": (self.model_metadata, pb.ModelMetadataRequest),
            "ModelConfig": (self.model_config, pb.ModelConfigRequest),
            "ModelStatistics": (self.model_statistics, pb.ModelStatisticsRequest),
            "RepositoryIndex": (self.repository_index, pb.RepositoryIndexRequest),
        }
        waited: dict[str, tuple[AsyncMethod, Any]] = {
            "RepositoryModelLoad": (self.repository_model_load, pb.RepositoryModelLoadRequest),
            "RepositoryModelUnload": (self.repository_model_unload, pb.RepositoryModelUnloadRequest),
        }
        handlers: dict[bytes, Handler | Status] = {}
        for name, (method, request) in served.items():
            handlers[_path(name)] = _answered(method, request)
        for name, (waited_method, request) in waited.items():
            handlers[_path(name)] = _awaited(waited_method, request)
        handlers[_path("ModelInfer")] = self.model_infer
        for name, why in _UNSERVED.items():  # answered as soon as the call's headers come
            handlers[_path(name)] = Status(UNIMPLEMENTED, f"{name} is not served by leanserve: {why}")
        return handlers

    def server_live(self, request: Any, call: Call) -> Any:
        return service_pb2.ServerLiveResponse(live=True)

    def server_ready(self, request: Any, call: Call) -> Any:
        return service_pb2.ServerReadyResponse(ready=self.handlers.is_ready())

    def server_metadata(self, request: Any, call: Call) -> Any:
        return service_pb2.ServerMetadataResponse(name="leanserve", version=__version__, extensions=EXTENSIONS)

    def model_ready(self, request: Any, call: Call) -> Any:
        self._authorize(call)
        try:
            snap = self.handlers.describe(request.name, request.version or None)
        except ModelNotFound:
            # As Triton answers: not ready rather than an error, so that is_model_ready() is a bool.
            return service_pb2.ModelReadyResponse(ready=False)
        return service_pb2.ModelReadyResponse(ready=snap.ready)

    def model_metadata(self, request: Any, call: Call) -> Any:
        self._authorize(call)
        return messages.model_metadata(self.handlers.model_metadata_doc(request.name, request.version or None))

    def model_config(self, request: Any, call: Call) -> Any:
        self._authorize(call)
        return messages.model_config(self.handlers.model_config_doc(request.name, request.version or None))

    def model_statistics(self, request: Any, call: Call) -> Any:
        """Triton's statistics: every model's (no name), every version's of a model, or one version's."""
        self._authorize(call)
        docs = self.handlers.model_stats_docs(request.name or None, request.version or None)
        return messages.model_statistics(docs)

    def repository_index(self, request: Any, call: Call) -> Any:
        self._authorize(call)
        return messages.repository_index(self.handlers.repository_index_docs(request.ready))

    async def repository_model_load(self, request: Any, call: Call) -> Any:
        overrides = [k for k in request.parameters if k == _LOAD_OVERRIDES or k.startswith(_LOAD_FILE_PREFIX)]
        if overrides:
            raise InvalidInput(
                f"loading {request.model_name!r} with {overrides[0]!r} is not supported: "
                "leanserve loads a model from its files in the repository",
                hint="write the configuration to model.toml and the files to the model's folder, then load it",
            )
        await self.handlers.load(request.model_name, _authorization(call))
        return service_pb2.RepositoryModelLoadResponse()

    async def repository_model_unload(self, request: Any, call: Call) -> Any:
        await self.handlers.unload(request.model_name, _authorization(call))
        return service_pb2.RepositoryModelUnloadResponse()

    def model_infer(self, data: bytes, call: Call, reply: Reply) -> None:
        """ModelInfer without a task: the router's callback answers the call (the hot path)."""
        try:
            message = _parsed(service_pb2.ModelInferRequest, data)
            authorization, headers = _request_metadata(call, self.router.unit_headers)
            if self.tokens.inference is not None:
                require_inference(self.tokens, authorization)
        except LeanserveError as e:
            reply(_status_of(e))
            return
        name, version = message.model_name, message.model_version or None
        start = time.perf_counter()
        try:
            request = decode_infer_request(message, self.limits)
        except LeanserveError as e:
            self._count_refused(name, version, e, start)
            reply(_status_of(e))
            return
        ctx = RequestContext(
            request.id or next_request_id(),
            call.peer,
            headers,  # an experiment's unit, as HTTP's header carries it
            # gRPC's deadline in event-loop time: the batcher drops the request once it passes.
            deadline=call.deadline,
            authorization=authorization,
        )

        def gone() -> None:
            ctx.gone = True  # the client cancelled the call: the batcher drops the request before the engine

        def done(result: InferResult | None, error: LeanserveError | None) -> None:
            # Called by the batcher for each request of a batch: nothing may escape into its loop.
            try:
                self._count_grpc(ctx, name, version, result, error)
                if error is not None:
                    reply(_status_of(error))
                else:
                    assert result is not None
                    reply(encode_infer_result(result).SerializeToString())
            except Exception as e:
                reply(_failed("ModelInfer", e))

        call.cancel = gone
        self.router.infer(ctx, name, version, request, done)

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

    def _authorize(self, call: Call) -> None:
        """Model data needs the inference token when the server has one (--token), as over HTTP."""
        if self.tokens.inference is not None:
            require_inference(self.tokens, _authorization(call))

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


def _path(method: str) -> bytes:
    return f"/{SERVICE}/{method}".encode()


def _status_of(error: LeanserveError) -> Status:
    """The one translation of leanserve's errors to a call's status: the code, HTTP's message, retry-after."""
    return Status(status_code(error).value[0], str(error), trailing_metadata(error))


def _parsed(message_type: Any, data: bytes) -> Any:
    try:
        return message_type.FromString(data)
    except DecodeError as e:
        raise InvalidInput(f"the request is not a {message_type.DESCRIPTOR.full_name}: {e}") from None


def _failed(name: str, e: Exception) -> Status:
    """A bug: answered as INTERNAL, logged with its traceback."""
    log.error("gRPC %s failed", name, exc_info=e)
    return _status_of(ServerError(f"internal error: {type(e).__name__}: {e}"))


def _raised(method: Method | AsyncMethod, e: Exception) -> Status:
    """The status a method's exception answers: leanserve's own errors mapped, anything else a bug."""
    return _status_of(e) if isinstance(e, LeanserveError) else _failed(getattr(method, "__name__", "method"), e)


def _answered(method: Method, message_type: Any) -> Handler:
    """A handler that answers at once with what ``method`` returns (or the status of what it raises)."""

    def handle(data: bytes, call: Call, reply: Reply) -> None:
        try:
            response = method(_parsed(message_type, data), call)
        except Exception as e:
            reply(_raised(method, e))
        else:
            reply(response.SerializeToString())

    return handle


def _awaited(method: AsyncMethod, message_type: Any) -> Handler:
    """A handler that runs ``method`` as a task (loading a model takes a while); cancelled if the client goes."""

    def handle(data: bytes, call: Call, reply: Reply) -> None:
        async def run() -> None:
            try:
                response = await method(_parsed(message_type, data), call)
            except Exception as e:
                reply(_raised(method, e))
            else:
                reply(response.SerializeToString())

        task = asyncio.get_running_loop().create_task(run())
        call.cancel = task.cancel

    return handle


def _authorization(call: Call) -> str | None:
    for key, value in call.metadata:
        if key == b"authorization":
            return value.decode("latin-1")
    return None


def _request_metadata(call: Call, wanted: set[bytes]) -> tuple[str | None, tuple[tuple[str, str], ...]]:
    """The call's token, and the (name, value) of the metadata the router asks for (experiments'
    unit headers): what HTTP's front end takes from the request's headers. gRPC's keys are lower-case."""
    authorization = None
    headers: list[tuple[str, str]] = []
    for key, value in call.metadata:
        if key.endswith(b"-bin"):
            continue  # binary metadata carries neither
        if key == b"authorization":
            authorization = value.decode("latin-1")
        elif key in wanted:
            headers.append((key.decode("latin-1"), value.decode("latin-1")))
    return authorization, tuple(headers)


__all__ = ["SERVICE", "GrpcFrontEnd"]
