"""What every peer server shares: its command line, the ONNX Runtime session, V2 JSON in and out.

Imported by the peer modules beside it, each running in its own virtual environment with only
numpy and onnxruntime guaranteed, so this file needs nothing else. Every peer gets the same
engine settings (threads, one inter-op thread, sequential execution) from :func:`engine`.
"""

from __future__ import annotations

import argparse
import json
from dataclasses import dataclass
from typing import Any

import numpy as np
import onnxruntime as ort

DTYPES: dict[str, Any] = {"FP32": np.float32, "FP64": np.float64, "INT64": np.int64, "INT32": np.int32}
NAMES = {np.dtype(v).name: k for k, v in DTYPES.items()}
ONNX_TYPES: dict[str, Any] = {
    "tensor(float)": np.float32,
    "tensor(double)": np.float64,
    "tensor(int64)": np.int64,
    "tensor(int32)": np.int32,
}


@dataclass(frozen=True)
class Options:
    model: str  # the name it is served under
    onnx: str  # path of model.onnx
    threads: int  # ONNX Runtime intra-op threads
    port: int
    grpc_port: int  # 0: none (only PyTriton opens one)
    max_batch: int
    window_ms: float  # how long a batch may wait for companions
    workdir: str  # where the peer may write its configuration and stores


def options(description: str) -> Options:
    p = argparse.ArgumentParser(description=description)
    p.add_argument("--model", required=True)
    p.add_argument("--onnx", required=True)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--grpc-port", type=int, default=0)
    p.add_argument("--max-batch", type=int, default=32)
    p.add_argument("--window-ms", type=float, default=0.0)
    p.add_argument("--workdir", default="")
    a = p.parse_args()
    return Options(a.model, a.onnx, a.threads, a.port, a.grpc_port, a.max_batch, a.window_ms, a.workdir)


class Engine:
    """One ONNX Runtime session; :meth:`run` takes a feed of stacked inputs, returns outputs by name."""

    def __init__(self, path: str, threads: int) -> None:
        so = ort.SessionOptions()
        so.intra_op_num_threads = threads
        so.inter_op_num_threads = 1
        so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        self.session = ort.InferenceSession(path, so, providers=["CPUExecutionProvider"])
        self.inputs = [i.name for i in self.session.get_inputs()]
        self.dtypes = [ONNX_TYPES[i.type] for i in self.session.get_inputs()]
        self.outputs = [o.name for o in self.session.get_outputs()]

    def run(self, feed: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        return dict(zip(self.outputs, self.session.run(self.outputs, feed), strict=True))


def decode(body: bytes | str | dict[str, Any]) -> dict[str, np.ndarray]:
    """A V2 JSON request's inputs as arrays."""
    req = json.loads(body) if isinstance(body, bytes | str) else body
    return {i["name"]: np.asarray(i["data"], dtype=DTYPES[i["datatype"]]).reshape(i["shape"]) for i in req["inputs"]}


def encode(model: str, outputs: dict[str, np.ndarray]) -> dict[str, Any]:
    """A V2 JSON response (as a dict) for one request's outputs."""
    return {
        "model_name": model,
        "outputs": [
            {"name": n, "datatype": NAMES[a.dtype.name], "shape": list(a.shape), "data": a.ravel().tolist()}
            for n, a in outputs.items()
        ],
    }


def stack(feeds: list[dict[str, np.ndarray]]) -> dict[str, np.ndarray]:
    """Requests' inputs (each with a batch dimension) concatenated into one batch."""
    if len(feeds) == 1:
        return feeds[0]
    return {k: np.concatenate([f[k] for f in feeds]) for k in feeds[0]}


def split(outputs: dict[str, np.ndarray], sizes: list[int]) -> list[dict[str, np.ndarray]]:
    """A batch's outputs cut back into one dict per request of ``sizes`` rows each."""
    cuts = np.cumsum(sizes)[:-1]
    parts = {k: np.split(v, cuts) for k, v in outputs.items()}
    return [{k: parts[k][i] for k in outputs} for i in range(len(sizes))]
