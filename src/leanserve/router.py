"""Between the protocol and the models: resolve a request to a model version and run it.

Later, experiments (A/B, canary, shadow) hook in here: an alias resolves to several versions
and a policy picks one per request. The protocol layer never touches engines or batchers.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

import numpy as np

from .errors import LeanserveError
from .protocol import InferOutput, InferRequest, InferResult, validate_request
from .registry import ModelRegistry, ModelVersion

ResultCallback = Callable[[InferResult | None, LeanserveError | None], None]


class Router:
    def __init__(self, registry: ModelRegistry) -> None:
        self.registry = registry

    def resolve(self, name: str, version: str | None) -> ModelVersion:
        return self.registry.get(name, version)

    def submit(self, target: ModelVersion, request: InferRequest, done: ResultCallback) -> None:
        """Validate and queue ``request``; ``done`` receives its result or error, on the event loop.

        Statistics (outcome, end-to-end time, in-flight) are kept here so every front end counts alike.
        """
        assert target.spec is not None and target.batcher is not None
        config = target.spec.config
        stats = target.stats
        start = time.perf_counter()
        try:
            rows = validate_request(request, config.inputs, config.outputs, config.max_batch_size or 0)
        except LeanserveError as e:
            stats.record_request("client_error", time.perf_counter() - start)
            done(None, e)
            return
        stats.in_flight += 1

        def finish(outputs: dict[str, np.ndarray] | None, error: LeanserveError | None) -> None:
            stats.in_flight -= 1
            if error is not None:
                stats.record_request(
                    "client_error" if error.status < 500 else "server_error", time.perf_counter() - start
                )
                done(None, error)
                return
            assert outputs is not None
            stats.record_request("success", time.perf_counter() - start)
            done(_result(target, request, outputs), None)

        target.batcher.submit({i.name: i.data for i in request.inputs}, rows, finish)

    async def infer(self, target: ModelVersion, request: InferRequest) -> InferResult:
        """:meth:`submit` for async callers."""
        future: asyncio.Future[InferResult] = asyncio.get_running_loop().create_future()

        def done(result: InferResult | None, error: LeanserveError | None) -> None:
            if not future.done():
                if error is not None:
                    future.set_exception(error)
                else:
                    future.set_result(result)  # type: ignore[arg-type]

        self.submit(target, request, done)
        return await future


def _result(target: ModelVersion, request: InferRequest, outputs: dict[str, np.ndarray]) -> InferResult:
    if request.outputs is None:
        selected = [InferOutput(name, array, request.binary_data_output) for name, array in outputs.items()]
    else:
        selected = [
            InferOutput(o.name, outputs[o.name], o.binary_data or request.binary_data_output, dict(o.parameters))
            for o in request.outputs
        ]
    return InferResult(
        model_name=target.name,
        model_version=str(target.version),
        outputs=selected,
        id=request.id,
        parameters=request.parameters,
    )
