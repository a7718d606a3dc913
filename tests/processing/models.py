"""A small repository of processed models, written for the tests (a real ONNX graph, real handler files)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from tests.fixtures.onnx_models import write_mlp

VOCAB = 50
DIM = 4


def table() -> np.ndarray:
    return np.random.default_rng(7).normal(size=(VOCAB, DIM)).astype(np.float32)


def write_masked_mean(path: Path) -> Path:
    """``mean`` [batch, 4]: the mean of the embedded ``input_ids`` over the positions ``attention_mask`` keeps.

    Padding with any id and mask 0 leaves it unchanged: what a sentence encoder does.
    """
    ids = helper.make_tensor_value_info("input_ids", TensorProto.INT64, ["batch", "sequence"])
    mask = helper.make_tensor_value_info("attention_mask", TensorProto.INT64, ["batch", "sequence"])
    out = helper.make_tensor_value_info("mean", TensorProto.FLOAT, ["batch", DIM])
    inits = [
        numpy_helper.from_array(table(), "table"),
        numpy_helper.from_array(np.array([2], dtype=np.int64), "last"),
        numpy_helper.from_array(np.array([1], dtype=np.int64), "sequence_axis"),
    ]
    nodes = [
        helper.make_node("Gather", ["table", "input_ids"], ["embedded"]),
        helper.make_node("Cast", ["attention_mask"], ["maskf"], to=TensorProto.FLOAT),
        helper.make_node("Unsqueeze", ["maskf", "last"], ["mask3"]),
        helper.make_node("Mul", ["embedded", "mask3"], ["kept"]),
        helper.make_node("ReduceSum", ["kept", "sequence_axis"], ["total"], keepdims=0),
        helper.make_node("ReduceSum", ["maskf", "sequence_axis"], ["count"], keepdims=1),
        helper.make_node("Div", ["total", "count"], ["mean"]),
    ]
    graph = helper.make_graph(nodes, "masked_mean", [ids, mask], [out], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    path.parent.mkdir(parents=True, exist_ok=True)
    onnx.save(model, path)
    return path


def token_ids(text: str) -> list[int]:
    """The tests' tokenizer: one id per character (the handler file below does the same)."""
    return [ord(c) % VOCAB for c in text] or [0]


def expected_mean(text: str) -> np.ndarray:
    result: np.ndarray = table()[token_ids(text)].mean(axis=0)
    return result


TOML = """
max_batch_size = 16

[[input]]
name = "input_ids"
pad_value = 0

[[input]]
name = "attention_mask"
mask = true

[dynamic_batching]
adaptive_batch_size = false
max_queue_size = {queue}

[handler]
timeout_ms = {timeout_ms}
{steps}

[[handler.input]]
name = "text"
datatype = "BYTES"
shape = []

[[handler.output]]
name = "{output}"
datatype = "FP32"
shape = [{width}]
"""

HANDLER = """
import time

import numpy as np

from leanserve import InvalidInput

VOCAB = 50


def preprocess(requests):
    out = []
    for request in requests:
        texts = [t.decode() if isinstance(t, bytes) else str(t) for t in request["text"].reshape(-1)]
        for text in texts:
            if text == "bad":
                raise InvalidInput("the text 'bad' is not accepted")
            if text == "boom":
                raise RuntimeError("the handler broke")
            if text.startswith("hang"):
                time.sleep(float(text[4:] or 5))
        ids = [[ord(c) % VOCAB for c in text] or [0] for text in texts]
        longest = max(len(i) for i in ids)
        # One request may hold several texts: padded to its own longest, the mask says where.
        out.append({"input_ids": np.array([i + [0] * (longest - len(i)) for i in ids], dtype=np.int64),
                    "attention_mask": np.array([[1] * len(i) + [0] * (longest - len(i)) for i in ids], dtype=np.int64)})
    return out


def postprocess(outputs, requests):
    return [{"mean": o["mean"]} for o in outputs]


def scale(outputs):
    return [{"x": o["mean"] * 2.0} for o in outputs]
"""


def write_repository(root: Path) -> Path:
    """``chars`` (text in, ragged), ``slow`` (its handler hangs on "hang"), ``tight`` (room for one request),
    ``pipe`` (chars, then a function, then the ``plain`` model), ``plain`` (an MLP without handler) and
    ``queued`` (chars again, for a test that reads its engine's runs and learned costs alone)."""
    for name, timeout_ms, steps, output, width, queue in (
        ("chars", 30000, "", "mean", DIM, 4096),
        ("queued", 30000, "", "mean", DIM, 4096),
        ("slow", 400, "", "mean", DIM, 4096),
        ("tight", 3000, "", "mean", DIM, 1),
        ("pipe", 30000, 'steps = ["function:scale", "model:plain"]', "y", 3, 4096),
    ):
        write_masked_mean(root / name / "1" / "model.onnx")
        toml = TOML.format(timeout_ms=timeout_ms, steps=steps, output=output, width=width, queue=queue)
        (root / name / "model.toml").write_text(toml)
        (root / name / "handler.py").write_text(HANDLER)
    write_mlp(root / "plain" / "1" / "model.onnx", in_dim=DIM, out_dim=3, seed=3)
    (root / "plain" / "model.toml").write_text("max_batch_size = 16\n")
    return root
