"""NVIDIA PyTriton peer: Triton Inference Server from PyPI, its dynamic batcher, one model instance.

Run as: python benchmarks/peers/pytriton_app.py --model tiny --onnx model.onnx --port P --grpc-port G
(in the venv made by benchmarks/peer_envs.py). The Triton bundled with PyTriton has only the Python
backend, so ONNX Runtime runs inside the bound Python function (in this process; Triton's Python
stub hands it each batch). V2 natively over HTTP at /v2/models/<model>/infer and over gRPC.
"""

from __future__ import annotations

import os
import socket
import sysconfig

import numpy as np
import v2
from pytriton.decorators import batch
from pytriton.model_config import DynamicBatcher, ModelConfig, Tensor
from pytriton.triton import Triton, TritonConfig

DTYPES = {"tensor(float)": np.float32, "tensor(int64)": np.int64, "tensor(int32)": np.int32}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def tensors(args: list) -> list[Tensor]:  # type: ignore[type-arg]
    """ONNX inputs or outputs as PyTriton tensors, without the batch dimension (-1 where dynamic)."""
    return [
        Tensor(name=a.name, dtype=DTYPES[a.type], shape=tuple(d if isinstance(d, int) else -1 for d in a.shape[1:]))
        for a in args
    ]


def main() -> None:
    o = v2.options(__doc__ or "")
    # Triton's Python stub links the system's libpython unless the interpreter's own comes first;
    # with a pyenv interpreter the mismatch crashes the stub at start.
    libdir = sysconfig.get_config_var("LIBDIR") or ""
    os.environ["LD_LIBRARY_PATH"] = ":".join(p for p in (libdir, os.environ.get("LD_LIBRARY_PATH", "")) if p)
    engine = v2.Engine(o.onnx, o.threads)

    @batch  # type: ignore[misc]
    def infer(**feed: np.ndarray) -> dict[str, np.ndarray]:
        return engine.run(feed)

    config = TritonConfig(
        http_address="127.0.0.1",
        http_port=o.port,
        grpc_address="127.0.0.1",
        grpc_port=o.grpc_port or free_port(),
        metrics_port=free_port(),
        allow_metrics=False,
    )
    batcher = DynamicBatcher(max_queue_delay_microseconds=int(o.window_ms * 1000))
    with Triton(config=config) as triton:
        triton.bind(
            model_name=o.model,
            infer_func=infer,
            inputs=tensors(engine.session.get_inputs()),
            outputs=tensors(engine.session.get_outputs()),
            config=ModelConfig(max_batch_size=o.max_batch, batcher=batcher),
            strict=False,
        )
        triton.serve()


if __name__ == "__main__":
    main()
