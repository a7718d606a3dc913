"""The whole protocol as a Starlette (ASGI) application.

The fast front end (:mod:`.http`) answers inference and health itself and hands every other
path here; under uvicorn or Ray Serve this app serves everything. Routes stay thin: they pick
arguments out of the URL and call :class:`.handlers.Handlers`.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from contextlib import AbstractAsyncContextManager
from pathlib import Path

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from ..errors import InvalidInput
from ..protocol import Limits, encode_error
from ..registry import ModelRegistry, RegistryOptions
from ..router import InferBody, RequestContext, Router, next_request_id
from .auth import DASHBOARD_COOKIE, Tokens
from .dashboard import Dashboard
from .experiments import ACTIONS, ExperimentEndpoints, ExperimentOptions, Experiments
from .handlers import Handlers, Reply, error_reply, json_reply
from .observability import Observability, ObservabilityOptions
from .openapi import openapi_document

HEADER_LENGTH = "inference-header-content-length"
Lifespan = Callable[[Starlette], AbstractAsyncContextManager[None]]
# Where /metrics comes from when it is more than this process's own: the exposition of every
# worker of ``serve --workers N`` added up (see :mod:`.siblings`). (body, content type)
MetricsSource = Callable[[], Awaitable[tuple[bytes, bytes]]]


def to_response(reply: Reply) -> Response:
    headers = {k.decode("latin-1"): v.decode("latin-1") for k, v in reply.headers}
    if reply.header_length is not None:
        headers[HEADER_LENGTH] = str(reply.header_length)
    return Response(reply.body, reply.status, headers=headers, media_type=reply.content_type.decode())


def request_context(request: Request, context_headers: Iterable[bytes] = ()) -> RequestContext:
    """The same context the fast front end builds, from a Starlette request.

    ``context_headers``: the lower-case names of the headers the router asks for (its experiments'
    unit headers, :attr:`leanserve.router.Router.unit_headers`).
    """
    headers = request.headers
    wanted = tuple((n, v) for n in map(bytes.decode, context_headers) if (v := headers.get(n)) is not None)
    return RequestContext(
        headers.get("x-request-id", "")[:128] or next_request_id(),
        request.client.host if request.client else None,
        wanted,
        authorization=headers.get("authorization"),
    )


def build_app(
    handlers: Handlers,
    lifespan: Lifespan | None = None,
    dashboard: Dashboard | None = None,
    experiments: ExperimentEndpoints | None = None,
    metrics_source: MetricsSource | None = None,
) -> Starlette:
    def version_of(request: Request) -> str | None:
        v: str | None = request.path_params.get("version")
        return v

    async def infer(request: Request) -> Response:
        body = await request.body()
        ctx = request_context(request, handlers.router.unit_headers)
        # The ASGI server says when the client hangs up: the request is then marked gone, and the
        # batcher drops it before the engine, as on the fast front end.
        watch = asyncio.get_running_loop().create_task(_mark_gone_on_disconnect(request, ctx))
        try:
            reply = await handlers.infer_async(
                ctx,
                request.path_params["model"],
                version_of(request),
                InferBody(body, request.headers.get(HEADER_LENGTH), request.headers.get("content-encoding")),
            )
        finally:
            watch.cancel()
        return to_response(reply)

    def guarded(endpoint: Callable[[Request], Reply]) -> Callable[[Request], Awaitable[Response]]:
        """Model data needs the inference token when the server has one (--token)."""

        async def route(request: Request) -> Response:
            denied = handlers.authorize(request.headers.get("authorization"))
            return to_response(denied if denied is not None else endpoint(request))

        return route

    async def live(request: Request) -> Response:
        return to_response(handlers.live())

    async def ready(request: Request) -> Response:
        return to_response(handlers.ready())

    async def server_metadata(request: Request) -> Response:
        return to_response(handlers.server_metadata())

    @guarded
    def model_metadata(request: Request) -> Reply:
        return handlers.model_metadata(request.path_params["model"], version_of(request))

    @guarded
    def model_ready(request: Request) -> Reply:
        return handlers.model_ready(request.path_params["model"], version_of(request))

    @guarded
    def model_config(request: Request) -> Reply:
        return handlers.model_config(request.path_params["model"], version_of(request))

    @guarded
    def model_stats(request: Request) -> Reply:
        return handlers.model_stats(request.path_params.get("model"), version_of(request))

    async def repository_index(request: Request) -> Response:
        denied = handlers.authorize(request.headers.get("authorization"))
        return to_response(denied or handlers.repository_index(await request.body()))

    async def load_model(request: Request) -> Response:
        reply = await handlers.load_model(request.path_params["model"], request.headers.get("authorization"))
        return to_response(reply)

    async def unload_model(request: Request) -> Response:
        reply = await handlers.unload_model(request.path_params["model"], request.headers.get("authorization"))
        return to_response(reply)

    async def metrics(request: Request) -> Response:
        body, content_type = await metrics_source() if metrics_source is not None else handlers.metrics()
        return Response(body, 200, media_type=content_type.decode())

    model = "/v2/models/{model}"
    versioned = "/v2/models/{model}/versions/{version}"

    async def openapi(request: Request) -> Response:
        return to_response(json_reply(openapi_document()))

    routes = [
        Route("/v2/openapi.json", openapi, methods=["GET"]),
        Route("/v2/health/live", live, methods=["GET"]),
        Route("/v2/health/ready", ready, methods=["GET"]),
        Route("/v2", server_metadata, methods=["GET"]),
        Route("/v2/models/stats", model_stats, methods=["GET"]),
        Route("/v2/repository/index", repository_index, methods=["POST", "GET"]),
        Route("/v2/repository/models/{model}/load", load_model, methods=["POST"]),
        Route("/v2/repository/models/{model}/unload", unload_model, methods=["POST"]),
        Route("/metrics", metrics, methods=["GET"]),
    ]
    if dashboard is not None:
        routes += dashboard_routes(dashboard)
    if experiments is not None:
        routes += experiment_routes(experiments)
    for prefix in (model, versioned):
        routes += [
            Route(prefix, model_metadata, methods=["GET"]),
            Route(prefix + "/ready", model_ready, methods=["GET"]),
            Route(prefix + "/infer", infer, methods=["POST"]),
            Route(prefix + "/config", model_config, methods=["GET"]),
            Route(prefix + "/stats", model_stats, methods=["GET"]),
        ]

    async def http_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, HTTPException)
        if exc.status_code == 404 and _leaves_the_repository(request.scope.get("raw_path") or b""):
            return Response(
                encode_error(
                    f"invalid model name in {request.url.path!r}: an encoded '/' or '\\' would leave the model "
                    "repository (model names are letters, digits, '_', '-' and '.')"
                ),
                400,
                media_type="application/json",
            )
        if exc.status_code == 404:
            message = f"no such endpoint: {request.method} {request.url.path}"
        elif exc.status_code == 405:
            message = f"method {request.method} not allowed on {request.url.path}"
        else:
            message = str(exc.detail)
        return Response(encode_error(message), exc.status_code, media_type="application/json")

    async def invalid(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, InvalidInput)
        return to_response(error_reply(exc))

    return Starlette(
        routes=routes, exception_handlers={HTTPException: http_error, InvalidInput: invalid}, lifespan=lifespan
    )


async def _mark_gone_on_disconnect(request: Request, ctx: RequestContext) -> None:
    """After the body, the next ASGI message is ``http.disconnect`` if the client hangs up first."""
    message = await request.receive()
    if message["type"] == "http.disconnect":
        ctx.gone = True


def dashboard_routes(dashboard: Dashboard) -> list[Route]:
    """The page at / and /dashboard, its sign-in, assets and reports; its data under /v2."""

    def credentials(request: Request) -> tuple[str | None, str | None]:
        return request.headers.get("authorization"), request.cookies.get(DASHBOARD_COOKIE)

    async def page(request: Request) -> Response:
        return to_response(dashboard.page(*credentials(request)))

    async def login(request: Request) -> Response:
        return to_response(dashboard.login(await request.body()))

    async def logout(request: Request) -> Response:
        return to_response(dashboard.logout())

    async def static(request: Request) -> Response:
        return to_response(dashboard.static(request.path_params["name"]))

    async def report(request: Request) -> Response:
        params = request.path_params
        return to_response(await dashboard.report(*credentials(request), params["model"], params["name"]))

    async def state(request: Request) -> Response:
        return to_response(await dashboard.state(*credentials(request)))

    async def failures(request: Request) -> Response:
        return to_response(await dashboard.failures(*credentials(request), dict(request.query_params)))

    return [
        Route("/", page, methods=["GET"]),
        Route("/dashboard", page, methods=["GET"]),
        Route("/dashboard/login", login, methods=["POST"]),
        Route("/dashboard/logout", logout, methods=["POST"]),
        Route("/dashboard/static/{name}", static, methods=["GET"]),
        Route("/dashboard/reports/{model}/{name}", report, methods=["GET"]),
        Route("/v2/dashboard/state", state, methods=["GET"]),
        Route("/v2/logs/failures", failures, methods=["GET"]),
    ]


def experiment_routes(endpoints: ExperimentEndpoints) -> list[Route]:
    """/v2/experiments: list, status, start, stop|promote|rollback, feedback (see :mod:`.experiments`)."""

    def credentials(request: Request) -> tuple[str | None, str | None]:
        return request.headers.get("authorization"), request.cookies.get(DASHBOARD_COOKIE)

    async def listing(request: Request) -> Response:
        return to_response(await endpoints.list(*credentials(request)))

    async def start(request: Request) -> Response:
        return to_response(await endpoints.start(request.headers.get("authorization"), await request.body()))

    async def status(request: Request) -> Response:
        return to_response(await endpoints.status(*credentials(request), request.path_params["name"]))

    def act(action: str) -> Callable[[Request], Awaitable[Response]]:
        async def route(request: Request) -> Response:
            authorization = request.headers.get("authorization")
            name = request.path_params["name"]
            return to_response(await endpoints.act(authorization, name, action, await request.body()))

        return route

    async def feedback(request: Request) -> Response:
        authorization = request.headers.get("authorization")
        return to_response(endpoints.feedback(authorization, request.path_params["name"], await request.body()))

    return [
        Route("/v2/experiments", listing, methods=["GET"]),
        Route("/v2/experiments", start, methods=["POST"]),
        Route("/v2/experiments/{name}", status, methods=["GET"]),
        Route("/v2/experiments/{name}/feedback", feedback, methods=["POST"]),
        *(Route(f"/v2/experiments/{{name}}/{action}", act(action), methods=["POST"]) for action in ACTIONS),
    ]


def _leaves_the_repository(raw_path: bytes) -> bool:
    # Servers decode %2F into '/' before routing, so such a name never reaches the model routes and
    # would otherwise be answered 404 "no such endpoint" rather than refused for what it is.
    lowered = raw_path.lower()
    return lowered.startswith(b"/v2/models/") and (b"%2f" in lowered or b"%5c" in lowered)


def asgi_app(
    repository: Path,
    limits: Limits | None = None,
    options: RegistryOptions | None = None,
    tokens: Tokens | None = None,
    observability: ObservabilityOptions | None = None,
    experiments: ExperimentOptions | None = None,
) -> Starlette:
    """A standalone ASGI app for a repository (uvicorn, Ray Serve): models load at lifespan start-up,
    then the experiments of its experiments.toml start; they close (their records written) at shutdown."""
    registry = ModelRegistry(Path(repository), options)
    router = Router(registry, limits or Limits())
    handlers = Handlers(registry, router, tokens)
    observe = Observability(registry, router, observability)
    running = Experiments(registry, router, observe.state_dir, experiments)

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        running.read()
        observe.start()
        await registry.load_all()
        running.open()
        yield
        handlers.shutting_down = True
        await registry.close()
        await running.close()
        await observe.close()

    dashboard = Dashboard(registry, router, observe, handlers.tokens, running)
    return build_app(handlers, lifespan, dashboard, ExperimentEndpoints(running, handlers.tokens))
