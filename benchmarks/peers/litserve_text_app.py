"""LitServe text peer: sentences in (V2 JSON, BYTES), tokenized in the server, MiniLM embeddings out.

The same pipeline as leanserve's demo ``minilm`` (handler.py tokenizing, the graph pooling and
normalizing): the same ``tokenizer.json`` through the ``tokenizers`` library (truncated at 128),
the same ``model.onnx`` on ONNX Runtime with the same threads, written the way LitServe asks:
decode_request / batch / predict / unbatch / encode_response, with LitServe's own dynamic batching
(max_batch_size, batch_timeout) and one worker. A batch is padded to its longest sentence.

Run as: python benchmarks/peers/litserve_text_app.py --onnx model.onnx --tokenizer tokenizer.json
--port P [--threads 2 --max-batch 32 --window-ms 0] (in the litserve venv of benchmarks/peer_envs.py).
Answers at /v2/models/minilm/infer.
"""

from __future__ import annotations

import argparse
from typing import Any

import litserve as ls
import numpy as np
import v2
from tokenizers import Tokenizer

MAX_LENGTH = 128  # as the demo handler truncates
MODEL = "minilm"


def arguments() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--onnx", required=True)
    p.add_argument("--tokenizer", required=True)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--max-batch", type=int, default=32)
    p.add_argument("--window-ms", type=float, default=0.0)
    return p.parse_args()


ARGS = arguments()


class TextAPI(ls.LitAPI):  # type: ignore[misc]
    def setup(self, device: str) -> None:
        self.engine = v2.Engine(ARGS.onnx, ARGS.threads)
        self.tokenizer = Tokenizer.from_file(ARGS.tokenizer)
        self.tokenizer.enable_truncation(MAX_LENGTH)
        # Pad to the longest sentence of the batch (pooling ignores masked positions).
        self.tokenizer.enable_padding(pad_id=0, pad_token="[PAD]")

    # No annotation on ``request``: LitServe reads it to build the endpoint, and a dict would become a query.
    def decode_request(self, request):  # type: ignore[no-untyped-def]
        text = next(i for i in request["inputs"] if i["name"] == "text")
        return [str(s) for s in text["data"]]

    def batch(self, inputs: list[list[str]]) -> tuple[list[str], list[int]]:
        return [s for sentences in inputs for s in sentences], [len(sentences) for sentences in inputs]

    def embed(self, sentences: list[str]) -> np.ndarray:
        encodings = self.tokenizer.encode_batch(sentences)
        feed = {
            "input_ids": np.array([e.ids for e in encodings], dtype=np.int64),
            "attention_mask": np.array([e.attention_mask for e in encodings], dtype=np.int64),
        }
        return self.engine.run(feed)["embedding"]  # the graph pools and normalizes

    def predict(self, x: Any) -> Any:
        if isinstance(x, tuple):  # a batch: (every request's sentences, sentences per request)
            sentences, counts = x
            return np.split(self.embed(sentences), np.cumsum(counts)[:-1])
        return self.embed(x)

    def unbatch(self, output: list[np.ndarray]) -> list[np.ndarray]:
        return output

    def encode_response(self, output: np.ndarray) -> dict[str, Any]:
        return v2.encode(MODEL, {"embedding": output})


if __name__ == "__main__":
    api = TextAPI(
        max_batch_size=ARGS.max_batch, batch_timeout=ARGS.window_ms / 1000, api_path=f"/v2/models/{MODEL}/infer"
    )
    server = ls.LitServer(api, accelerator="cpu", workers_per_device=1, fast_queue=True)
    server.run(host="127.0.0.1", port=ARGS.port, num_api_servers=1, log_level="warning", generate_client_file=False)
