"""LitServe peer: a LitAPI with LitServe's own batching (max_batch_size, batch_timeout), one worker.

Run as: python benchmarks/peers/litserve_app.py --model tiny --onnx model.onnx --port P [...]
(in the venv made by benchmarks/peer_envs.py). Answers V2 JSON at /v2/models/<model>/infer.
"""

from __future__ import annotations

from typing import Any

import litserve as ls
import numpy as np
import v2

OPTS = v2.options(__doc__ or "")


class OnnxAPI(ls.LitAPI):  # type: ignore[misc]
    def setup(self, device: str) -> None:
        self.engine = v2.Engine(OPTS.onnx, OPTS.threads)

    # No annotation on ``request``: LitServe reads it to build the endpoint, and a dict would become a query.
    def decode_request(self, request):  # type: ignore[no-untyped-def]
        return v2.decode(request)

    def batch(self, inputs: list[dict[str, np.ndarray]]) -> tuple[dict[str, np.ndarray], list[int]]:
        return v2.stack(inputs), [len(next(iter(f.values()))) for f in inputs]

    def predict(self, x: Any) -> Any:
        if isinstance(x, tuple):  # a batch: (stacked feed, rows per request)
            feed, sizes = x
            return v2.split(self.engine.run(feed), sizes)
        return self.engine.run(x)

    def unbatch(self, output: list[dict[str, np.ndarray]]) -> list[dict[str, np.ndarray]]:
        return output

    def encode_response(self, output: dict[str, np.ndarray]) -> dict[str, Any]:
        return v2.encode(OPTS.model, output)


if __name__ == "__main__":
    api = OnnxAPI(
        max_batch_size=OPTS.max_batch, batch_timeout=OPTS.window_ms / 1000, api_path=f"/v2/models/{OPTS.model}/infer"
    )
    server = ls.LitServer(api, accelerator="cpu", workers_per_device=1, fast_queue=True)
    server.run(host="127.0.0.1", port=OPTS.port, num_api_servers=1, log_level="warning", generate_client_file=False)
