"""MLServer peer: a small custom runtime (MLServer ships none for ONNX), its adaptive batching.

Run as: python benchmarks/peers/mlserver_app.py --model tiny --onnx model.onnx --port P --workdir DIR
(in the venv made by benchmarks/peer_envs.py). Writes DIR/settings.json and DIR/<model>/model-settings.json
and runs ``mlserver start DIR``. Inference runs in the server process (parallel_workers = 0: one
worker, no hop to a worker process). MLServer batches only when max_batch_time > 0; 1 us, the
least it takes, makes it take what is queued, as a window of 0 does elsewhere. V2 natively, at
/v2/models/<model>/infer.
"""

from __future__ import annotations

import json
import os
import socket
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent

if __name__ == "__main__":
    import v2

    def free_port() -> int:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            return int(s.getsockname()[1])

    o = v2.options(__doc__ or "")
    work = Path(o.workdir)
    (work / o.model).mkdir(parents=True, exist_ok=True)
    server = {"host": "127.0.0.1", "http_port": o.port, "grpc_port": o.grpc_port or free_port()}
    server |= {"metrics_port": free_port(), "parallel_workers": 0, "debug": False}
    (work / "settings.json").write_text(json.dumps(server))
    model = {"name": o.model, "implementation": "mlserver_app.OnnxRuntimeModel"}
    model |= {"max_batch_size": o.max_batch, "max_batch_time": max(o.window_ms / 1000, 1e-6)}
    model |= {"parameters": {"uri": o.onnx, "extra": {"threads": o.threads}}}
    (work / o.model / "model-settings.json").write_text(json.dumps(model))
    os.environ["PYTHONPATH"] = str(HERE)
    mlserver = str(Path(sys.executable).with_name("mlserver"))
    os.execv(mlserver, [mlserver, "start", str(work)])

import v2  # noqa: E402
from mlserver import MLModel  # noqa: E402
from mlserver.codecs import NumpyCodec  # noqa: E402
from mlserver.types import InferenceRequest, InferenceResponse  # noqa: E402


class OnnxRuntimeModel(MLModel):  # type: ignore[misc]
    async def load(self) -> bool:
        p = self.settings.parameters
        self.engine = v2.Engine(p.uri, int(p.extra["threads"]))
        return True

    async def predict(self, payload: InferenceRequest) -> InferenceResponse:
        feed = {i.name: NumpyCodec.decode_input(i) for i in payload.inputs}
        outputs = self.engine.run(feed)
        return InferenceResponse(
            model_name=self.name, outputs=[NumpyCodec.encode_output(n, a) for n, a in outputs.items()]
        )
