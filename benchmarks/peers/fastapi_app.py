"""The floor peer: a plain FastAPI + uvicorn V2 endpoint running ONNX Runtime inline, no batching.

Run as: python benchmarks/peers/fastapi_app.py MODEL.onnx PORT THREADS
"""

from __future__ import annotations

import sys

import numpy as np
import onnxruntime as ort
import uvicorn
from fastapi import FastAPI, Request
from fastapi.responses import ORJSONResponse

DTYPES = {"FP32": np.float32, "INT64": np.int64, "INT32": np.int32, "FP64": np.float64}


def build(model_path: str, threads: int) -> FastAPI:
    so = ort.SessionOptions()
    so.intra_op_num_threads = threads
    so.inter_op_num_threads = 1
    session = ort.InferenceSession(model_path, so, providers=["CPUExecutionProvider"])
    output_names = [o.name for o in session.get_outputs()]
    app = FastAPI()

    @app.post("/v2/models/{model}/infer")
    async def infer(model: str, request: Request) -> ORJSONResponse:
        body = await request.json()
        feed = {
            i["name"]: np.asarray(i["data"], dtype=DTYPES[i["datatype"]]).reshape(i["shape"]) for i in body["inputs"]
        }
        results = session.run(output_names, feed)
        return ORJSONResponse(
            {
                "model_name": model,
                "outputs": [
                    {"name": n, "datatype": "FP32", "shape": list(r.shape), "data": r.ravel().tolist()}
                    for n, r in zip(output_names, results, strict=True)
                ],
            }
        )

    @app.get("/v2/health/ready")
    async def ready() -> dict[str, bool]:
        return {"ready": True}

    return app


if __name__ == "__main__":
    app = build(sys.argv[1], int(sys.argv[3]))
    uvicorn.run(app, host="127.0.0.1", port=int(sys.argv[2]), loop="uvloop", http="httptools", log_level="warning")
