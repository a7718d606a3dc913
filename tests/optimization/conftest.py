"""Real, small models for the optimize tests, built once per session.

* ``digits``: a small CNN trained for a few seconds on scikit-learn's 8x8 digits, exported to
  ONNX with a dynamic batch, and an .npz of held-out images with labels.
* ``mlp``: a two-layer perceptron written with onnx.helper (no torch), with random data.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper


@dataclass(frozen=True)
class ModelFixture:
    model: Path
    data: Path


def build_mlp(path: Path, inputs: int = 64, hidden: int = 256, classes: int = 10, seed: int = 0) -> None:
    rng = np.random.default_rng(seed)
    w1 = numpy_helper.from_array((rng.standard_normal((inputs, hidden)) / np.sqrt(inputs)).astype(np.float32), "w1")
    b1 = numpy_helper.from_array(rng.standard_normal(hidden).astype(np.float32) * 0.1, "b1")
    w2 = numpy_helper.from_array((rng.standard_normal((hidden, classes)) / np.sqrt(hidden)).astype(np.float32), "w2")
    b2 = numpy_helper.from_array(rng.standard_normal(classes).astype(np.float32) * 0.1, "b2")
    nodes = [
        helper.make_node("MatMul", ["x", "w1"], ["h0"], name="fc1"),
        helper.make_node("Add", ["h0", "b1"], ["h1"], name="fc1_bias"),
        helper.make_node("Relu", ["h1"], ["h2"], name="relu"),
        helper.make_node("MatMul", ["h2", "w2"], ["l0"], name="fc2"),
        helper.make_node("Add", ["l0", "b2"], ["logits"], name="fc2_bias"),
    ]
    graph = helper.make_graph(
        nodes,
        "mlp",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", inputs])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["batch", classes])],
        [w1, b1, w2, b2],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    onnx.save(model, str(path))


@pytest.fixture(scope="session")
def mlp(tmp_path_factory: pytest.TempPathFactory) -> ModelFixture:
    root = tmp_path_factory.mktemp("mlp")
    build_mlp(root / "mlp.onnx")
    x = np.random.default_rng(1).standard_normal((200, 64)).astype(np.float32)
    np.savez(root / "eval.npz", x=x)
    return ModelFixture(root / "mlp.onnx", root / "eval.npz")


def train_digits_cnn(epochs: int = 8):  # type: ignore[no-untyped-def]
    import torch
    from sklearn.datasets import load_digits

    torch.manual_seed(0)
    digits = load_digits()
    x = (digits.images / 16.0).astype(np.float32)[:, None, :, :]
    y = digits.target.astype(np.int64)
    order = np.random.default_rng(0).permutation(len(x))
    train, held = order[:1200], order[1200:]
    model = torch.nn.Sequential(
        torch.nn.Conv2d(1, 32, 3, padding=1),
        torch.nn.ReLU(),
        torch.nn.Conv2d(32, 64, 3, padding=1),
        torch.nn.ReLU(),
        torch.nn.MaxPool2d(2),
        torch.nn.Conv2d(64, 64, 3, padding=1),
        torch.nn.ReLU(),
        torch.nn.MaxPool2d(2),
        torch.nn.Flatten(),
        torch.nn.Linear(64 * 2 * 2, 128),
        torch.nn.ReLU(),
        torch.nn.Linear(128, 10),
    )
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    xt, yt = torch.from_numpy(x[train]), torch.from_numpy(y[train])
    for _ in range(epochs):
        for i in range(0, len(xt), 64):
            opt.zero_grad()
            loss = torch.nn.functional.cross_entropy(model(xt[i : i + 64]), yt[i : i + 64])
            loss.backward()
            opt.step()
    model.eval()
    return model, x[held], y[held]


@pytest.fixture(scope="session")
def digits(tmp_path_factory: pytest.TempPathFactory) -> ModelFixture:
    import torch

    root = tmp_path_factory.mktemp("digits")
    model, x, y = train_digits_cnn()
    # The TorchScript exporter is quick and deterministic for a fixture; optimize itself uses dynamo.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        torch.onnx.export(
            model,
            (torch.from_numpy(x[:2]),),
            str(root / "digits.onnx"),
            dynamo=False,
            input_names=["image"],
            output_names=["logits"],
            dynamic_axes={"image": {0: "batch"}, "logits": {0: "batch"}},
        )
    np.savez(root / "eval.npz", image=x, labels=y)
    return ModelFixture(root / "digits.onnx", root / "eval.npz")
