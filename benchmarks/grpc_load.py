"""A small gRPC load generator: ModelInfer at a fixed concurrency for a fixed time, like wrk for HTTP.

    python benchmarks/grpc_load.py 127.0.0.1:8001 request.bin --concurrency 32 --duration 10

``request.bin`` is a serialized ``inference.ModelInferRequest`` (see :func:`infer_request`). It is
sent as it is, bytes in and bytes out, over one HTTP/2 channel from ``concurrency`` coroutines on
grpc.aio: the client does no protobuf work per request, which keeps it cheap beside the server
it measures (tritonclient.grpc builds and parses messages in Python for every call, and is the
bottleneck long before the server). Prints one JSON object: concurrency, requests_per_s, p50_ms,
p99_ms, errors.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from pathlib import Path

import grpc
import numpy as np

from leanserve.timing import percentiles

METHOD = "/inference.GRPCInferenceService/ModelInfer"


def infer_request(model: str, feed: dict[str, np.ndarray]) -> bytes:
    """A ModelInferRequest with every input in raw_input_contents, as tritonclient.grpc sends it."""
    from tritonclient.grpc import service_pb2

    datatypes = {"float32": "FP32", "int64": "INT64"}
    request = service_pb2.ModelInferRequest(model_name=model)
    for name, array in feed.items():
        request.inputs.add(name=name, datatype=datatypes[str(array.dtype)], shape=array.shape)
        request.raw_input_contents.append(np.ascontiguousarray(array).tobytes())
    data: bytes = request.SerializeToString()
    return data


def output_of(response: bytes, name: str) -> np.ndarray:
    """The output called ``name`` of a serialized ModelInferResponse."""
    from tritonclient.grpc import InferResult, service_pb2

    array: np.ndarray = InferResult(service_pb2.ModelInferResponse.FromString(response)).as_numpy(name)
    return array


async def call_once(target: str, request: bytes) -> bytes:
    async with grpc.aio.insecure_channel(target) as channel:
        answer: bytes = await channel.unary_unary(METHOD)(request, timeout=10)
        return answer


async def load(target: str, request: bytes, concurrency: int, duration: float) -> dict[str, float]:
    latencies: list[float] = []
    errors = 0
    options = [("grpc.max_receive_message_length", -1), ("grpc.max_send_message_length", -1)]
    async with grpc.aio.insecure_channel(target, options=options) as channel:
        infer = channel.unary_unary(METHOD)
        await infer(request, timeout=10)  # connected before the clock starts
        end = time.perf_counter() + duration

        async def worker() -> None:
            nonlocal errors
            while True:
                start = time.perf_counter()
                if start >= end:
                    return
                try:
                    await infer(request, timeout=10)
                except grpc.aio.AioRpcError:
                    errors += 1
                    continue
                latencies.append(time.perf_counter() - start)

        began = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        elapsed = time.perf_counter() - began
    p50, p99 = percentiles(np.array(latencies) * 1e3, (50, 99))
    return {
        "concurrency": concurrency,
        "requests_per_s": len(latencies) / elapsed,
        "p50_ms": p50,
        "p99_ms": p99,
        "errors": errors,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("target", help="host:port of the gRPC server")
    parser.add_argument("request", type=Path, help="a serialized ModelInferRequest")
    parser.add_argument("--concurrency", type=int, default=1)
    parser.add_argument("--duration", type=float, default=10.0)
    args = parser.parse_args()
    request = args.request.read_bytes()
    try:
        import uvloop
    except ImportError:
        result = asyncio.run(load(args.target, request, args.concurrency, args.duration))
    else:
        result = uvloop.run(load(args.target, request, args.concurrency, args.duration))
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
