"""The Ray Serve peer: one replica multiplexing ONNX Runtime sessions with ``@serve.multiplexed``.

Run as: benchmarks/.venv-ray/bin/python benchmarks/peers/ray_multiplex.py REPOSITORY PORT MODELS_PER_REPLICA

Requests are V2 JSON posted to ``/`` with the model in the ``serve_multiplexed_model_id`` header, as
Ray's documentation shows; answers are V2 JSON with the replica's load count in ``parameters.loads``.
The model loads on the replica's event loop, as in Ray's example, so loads are one at a time as in
leanserve; inference runs in a thread, so models answer side by side as in leanserve.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort
import ray
from ray import serve
from starlette.requests import Request
from starlette.responses import Response

DTYPES = {"FP32": np.float32, "INT64": np.int64}


def build(repository: Path, models_per_replica: int) -> Any:
    @serve.deployment(max_ongoing_requests=32, ray_actor_options={"num_cpus": 0})
    class Multiplexed:
        def __init__(self) -> None:
            self.loads = 0

        @serve.multiplexed(max_num_models_per_replica=models_per_replica)
        async def get_model(self, model_id: str) -> ort.InferenceSession:
            so = ort.SessionOptions()
            so.intra_op_num_threads = 1
            so.inter_op_num_threads = 1
            session = ort.InferenceSession(
                str(repository / model_id / "1" / "model.onnx"), so, providers=["CPUExecutionProvider"]
            )
            self.loads += 1
            return session

        async def __call__(self, request: Request) -> Response:
            model_id = serve.get_multiplexed_model_id()
            session = await self.get_model(model_id)
            body = json.loads(await request.body())
            feed = {
                i["name"]: np.asarray(i["data"], dtype=DTYPES[i["datatype"]]).reshape(i["shape"])
                for i in body["inputs"]
            }
            names = [o.name for o in session.get_outputs()]
            results = await asyncio.to_thread(session.run, names, feed)
            answer = {
                "model_name": model_id,
                "outputs": [
                    {"name": n, "datatype": "FP32", "shape": list(r.shape), "data": r.ravel().tolist()}
                    for n, r in zip(names, results, strict=True)
                ],
                "parameters": {"loads": self.loads},
            }
            return Response(json.dumps(answer), media_type="application/json")

    return Multiplexed.bind()


def main() -> None:
    repository, port, per_replica = Path(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3])
    # SIGTERM becomes SystemExit, so the finally below stops Ray's own processes too.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    os.environ["RAY_USAGE_STATS_ENABLED"] = "0"  # no report home: this machine reaches no network
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, configure_logging=False)
    try:
        serve.start(http_options={"host": "127.0.0.1", "port": port})
        serve.run(build(repository, per_replica), route_prefix="/", blocking=False)
        print("ready", flush=True)
        while True:
            time.sleep(1)
    finally:
        serve.shutdown()
        ray.shutdown()


if __name__ == "__main__":
    main()
