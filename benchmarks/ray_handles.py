"""Could leanserve's own front end sit in front of Ray Serve's deployment handles? The handle's cost alone.

    .venv/bin/python benchmarks/ray_handles.py [--seconds 5]

Deploys the tiny model's replica as an application with no HTTP route and calls its handle from the
driver (on uvloop, as leanserve's front end would) at concurrency 1 and 32: a front end there could
be no faster than these calls/s. Compare with `make bench-scaleout`'s leanserve-on-Ray figures,
which cross Ray's HTTP proxy and the ingress as well.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import tempfile
import time
from pathlib import Path

import orjson
from serving import write_tiny_mlp


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=5.0)
    args = parser.parse_args()
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    import ray
    import uvloop
    from ray import serve

    from leanserve.config import Scale
    from leanserve.ray.forward import Call
    from leanserve.ray.options import deployment_name, deployment_options
    from leanserve.ray.replica import ModelReplica
    from leanserve.registry import RegistryOptions

    with tempfile.TemporaryDirectory() as tmp:
        repo = Path(tmp)
        write_tiny_mlp(repo / "tiny" / "1" / "model.onnx")
        ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
        try:
            serve.start(http_options={"location": "NoServer"})
            deployment = serve.deployment(ModelReplica).options(
                name=deployment_name("tiny"), **deployment_options(Scale(num_cpus=1))
            )
            serve.run(deployment.bind(str(repo), "tiny", RegistryOptions()), name="tiny", route_prefix=None)
            handle = serve.get_app_handle("tiny")
            body = orjson.dumps({"inputs": [{"name": "x", "datatype": "FP32", "shape": [1, 64], "data": [1.0] * 64}]})
            call = Call("POST", "/v2/models/tiny/infer", body=body)

            async def measure() -> None:
                assert (await handle.infer.remote(call, None)).status == 200
                for concurrency in (1, 32):
                    done = 0
                    start = time.perf_counter()

                    async def caller(start: float = start) -> None:
                        nonlocal done
                        while time.perf_counter() - start < args.seconds:
                            await handle.infer.remote(call, None)
                            done += 1

                    await asyncio.gather(*(caller() for _ in range(concurrency)))
                    rate = done / (time.perf_counter() - start)
                    print(f"handle from the driver, c{concurrency}: {rate:.1f} calls/s", flush=True)

            uvloop.run(measure())
        finally:
            serve.shutdown()
            ray.shutdown()
    return 0


if __name__ == "__main__":
    sys.exit(main())
