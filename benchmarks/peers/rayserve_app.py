"""Ray Serve peer: one replica with @serve.batch, answering V2 JSON at /v2/models/<model>/infer.

Run as: python benchmarks/peers/rayserve_app.py --model tiny --onnx model.onnx --port P [...]
(in the venv made by benchmarks/peer_envs.py). Starts a local Ray (2 CPUs, no dashboard), deploys
and blocks. max_ongoing_requests is 64: Ray's default of 5 lets at most 5 requests reach the
replica, which caps every batch at 5.
"""

from __future__ import annotations

import os
import time
from typing import Any

import numpy as np
import ray
import v2
from ray import serve
from starlette.requests import Request
from starlette.responses import JSONResponse

OPTS = v2.options(__doc__ or "")


@serve.deployment(num_replicas=1, max_ongoing_requests=64, ray_actor_options={"num_cpus": 0})
class OnnxModel:
    def __init__(self) -> None:
        self.engine = v2.Engine(OPTS.onnx, OPTS.threads)

    @serve.batch(max_batch_size=OPTS.max_batch, batch_wait_timeout_s=OPTS.window_ms / 1000)
    async def infer(self, feeds: list[dict[str, np.ndarray]]) -> list[dict[str, Any]]:
        sizes = [len(next(iter(f.values()))) for f in feeds]
        outputs = v2.split(self.engine.run(v2.stack(feeds)), sizes)
        return [v2.encode(OPTS.model, o) for o in outputs]

    async def __call__(self, request: Request) -> JSONResponse:
        return JSONResponse(await self.infer(v2.decode(await request.body())))


if __name__ == "__main__":
    # Ray's workers are started by its raylet, which inherits this environment: they find v2.py.
    os.environ["PYTHONPATH"] = os.path.dirname(os.path.abspath(__file__))
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, configure_logging=False)
    serve.start(http_options={"host": "127.0.0.1", "port": OPTS.port})
    serve.run(OnnxModel.bind(), name=OPTS.model, route_prefix=f"/v2/models/{OPTS.model}/infer")
    while True:
        time.sleep(3600)
