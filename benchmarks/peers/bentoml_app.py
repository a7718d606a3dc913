"""BentoML peer: a service with one batchable API (BentoML's adaptive batching), one worker.

Run as: python benchmarks/peers/bentoml_app.py --model tiny --onnx model.onnx --port P [...]
(in the venv made by benchmarks/peer_envs.py); it hands the options to ``bentoml serve`` in the
environment. A batchable API takes one argument, so a model's inputs are stacked into one array
``x`` on axis 1 (the request body is ``{"x": [...]}``, the answer the outputs stacked the same
way), at /v2/models/<model>/infer. BentoML has no batching window to set: its dispatcher adapts
the wait to the latency it observes (max_latency_ms is a deadline, left at its default).
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
ENV = "PEER_OPTIONS"

if __name__ == "__main__":
    import v2

    o = v2.options(__doc__ or "")
    os.environ[ENV] = json.dumps(o.__dict__)
    bentoml = str(Path(sys.executable).with_name("bentoml"))
    os.execv(
        bentoml,
        [
            bentoml,
            "serve",
            "bentoml_app:Onnx",
            "--working-dir",
            str(HERE),
            "--host",
            "127.0.0.1",
            "--port",
            str(o.port),
        ],
    )

import bentoml  # noqa: E402 - only the served module needs it
import v2  # noqa: E402

OPTS = json.loads(os.environ.get(ENV, "{}"))


@bentoml.service(workers=1, logging={"access": {"enabled": False}})
class Onnx:
    def __init__(self) -> None:
        self.engine = v2.Engine(OPTS["onnx"], OPTS["threads"])

    @bentoml.api(
        batchable=True, max_batch_size=OPTS.get("max_batch", 32), route=f"/v2/models/{OPTS.get('model')}/infer"
    )
    def infer(self, x: np.ndarray) -> np.ndarray:
        # JSON numbers arrive as float64 or int64: each input is cast to the type the model declares.
        e = self.engine
        if len(e.inputs) == 1:
            feed = {e.inputs[0]: x.astype(e.dtypes[0], copy=False)}
        else:
            feed = {n: x[:, i].astype(t, copy=False) for i, (n, t) in enumerate(zip(e.inputs, e.dtypes, strict=True))}
        outputs = list(self.engine.run(feed).values())
        return outputs[0] if len(outputs) == 1 else np.stack(outputs, axis=1)
