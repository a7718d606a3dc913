"""Between the protocol and the models: resolve a request to a model version and run it.

Later, experiments (A/B, canary, shadow) hook in here: an alias resolves to several versions
and a policy picks one per request. The protocol layer never touches engines or batchers.
"""

from __future__ import annotations

import asyncio
import time

import numpy as np

from .errors import LeanserveError
from .protocol import InferOutput, InferRequest, InferResult, validate_request
from .registry import ModelRegistry, ModelVersion


class Router:
    def __init__(self, registry: ModelRegistry) -> None:
        self.registry = registry

    def resolve(self, name: str, version: str | None) -> ModelVersion:
        return self.registry.get(name, version)

    def submit(self, target: ModelVersion, request: InferRequest) -> asyncio.Future[InferResult]:
        """Validate and queue ``request``; the future resolves to its result or raises a LeanserveError.

        Statistics (outcome, end-to-end time, in-flight) are kept here so every front end counts alike.
        """
        assert target.spec is not None and target.batcher is not None
        config = target.spec.config
        stats = target.stats
        start = time.perf_counter()
        loop = asyncio.get_running_loop()
        result: asyncio.Future[InferResult] = loop.create_future()
        try:
            rows = validate_request(request, config.inputs, config.outputs, config.max_batch_size or 0)
        except LeanserveError as e:
            stats.record_request("client_error", time.perf_counter() - start)
            result.set_exception(e)
            return result
        inputs = {i.name: i.data for i in request.inputs}
        stats.in_flight += 1
        pending = target.batcher.submit(inputs, rows)

        def finish(done: asyncio.Future[dict[str, np.ndarray]]) -> None:
            stats.in_flight -= 1
            error = done.exception()
            if error is not None:
                outcome = "client_error" if isinstance(error, LeanserveError) and error.status < 500 else "server_error"
                stats.record_request(outcome, time.perf_counter() - start)
                if not result.done():
                    result.set_exception(error)
                return
            stats.record_request("success", time.perf_counter() - start)
            if not result.done():
                result.set_result(_result(target, request, done.result()))

        pending.add_done_callback(finish)
        return result


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
