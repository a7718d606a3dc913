from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch

from leanserve.config import load_model_config
from leanserve.demo import digits_example
from leanserve.demo.digits import MIN_ACCURACY, load_split, train
from leanserve.errors import UsageError


def _session(repo: Path) -> ort.InferenceSession:
    return ort.InferenceSession(str(repo / "digits" / "1" / "model.onnx"), providers=["CPUExecutionProvider"])


def _eval_set(repo: Path) -> tuple[np.ndarray, np.ndarray]:
    with np.load(repo / "digits" / "eval.npz") as data:
        return data["image"], data["labels"]


def test_held_out_accuracy_through_onnxruntime(demo_repo: Path) -> None:
    images, labels = _eval_set(demo_repo)
    logits = _session(demo_repo).run(["logits"], {"image": images})[0]
    accuracy = float(np.mean(logits.argmax(axis=1) == labels))
    assert accuracy >= MIN_ACCURACY
    assert load_model_config(demo_repo / "digits").metadata["accuracy"] == pytest.approx(accuracy, abs=1e-4)


def test_probabilities_are_the_softmax_of_logits(demo_repo: Path) -> None:
    images, _ = _eval_set(demo_repo)
    logits, probabilities = _session(demo_repo).run(["logits", "probabilities"], {"image": images[:8]})
    np.testing.assert_allclose(probabilities, torch.softmax(torch.from_numpy(logits), dim=1).numpy(), atol=1e-6)


def test_onnx_matches_a_retrained_torch_model(demo_repo: Path) -> None:
    # Training is seeded and single-threaded, so retraining here reproduces the exported model.
    split = load_split()
    model = train(split, lambda _: None)
    with torch.no_grad():
        expected = model(torch.from_numpy(split.test_images))[0].numpy()
    got = _session(demo_repo).run(["logits"], {"image": split.test_images})[0]
    np.testing.assert_allclose(got, expected, atol=1e-4)


@pytest.mark.parametrize("batch", [1, 5, 32])
def test_batch_dimension_is_dynamic(demo_repo: Path, batch: int) -> None:
    images, _ = _eval_set(demo_repo)
    logits, probabilities = _session(demo_repo).run(None, {"image": images[:batch]})
    assert logits.shape == probabilities.shape == (batch, 10)


def test_exported_shapes_name_the_batch_dimension(demo_repo: Path) -> None:
    graph = onnx.load(str(demo_repo / "digits" / "1" / "model.onnx")).graph
    (image,) = graph.input
    dims = image.type.tensor_type.shape.dim
    assert dims[0].dim_param and [d.dim_value for d in dims[1:]] == [1, 8, 8]
    assert [o.name for o in graph.output] == ["logits", "probabilities"]


def test_split_is_fixed_and_stratified() -> None:
    a, b = load_split(), load_split()
    np.testing.assert_array_equal(a.test_images, b.test_images)
    assert len(a.test_labels) == 360 and len(a.train_labels) == 1437
    assert set(np.unique(a.test_labels)) == set(range(10))
    assert a.test_images.dtype == np.float32 and a.test_images.min() >= 0.0 and a.test_images.max() <= 1.0


def test_eval_set_is_the_held_out_split(demo_repo: Path) -> None:
    images, labels = _eval_set(demo_repo)
    split = load_split()
    assert images.shape == (360, 1, 8, 8) and images.dtype == np.float32
    assert labels.shape == (360,) and labels.dtype == np.int64
    np.testing.assert_array_equal(images, split.test_images)


def test_model_toml_parses(demo_repo: Path) -> None:
    config = load_model_config(demo_repo / "digits")
    assert config.max_batch_size == 32
    assert [(t.name, t.datatype, t.shape) for t in config.inputs] == [("image", "FP32", (1, 8, 8))]
    assert [(t.name, t.shape) for t in config.outputs] == [("logits", (10,)), ("probabilities", (10,))]
    assert config.dynamic_batching.max_queue_delay_ms == 0.0
    assert config.runtime.intra_op_threads == 1
    assert config.metadata["labels"] == [str(d) for d in range(10)]


def test_digits_example(demo_repo: Path) -> None:
    example = digits_example(demo_repo)
    images, labels = _eval_set(demo_repo)
    assert example.image.shape == (1, 1, 8, 8) and example.image.dtype == np.float32
    assert example.label == int(labels[0])
    image, label = digits_example(demo_repo, index=-1)
    np.testing.assert_array_equal(image[0], images[-1])
    assert label == int(labels[-1])
    with pytest.raises(UsageError, match="out of range"):
        digits_example(demo_repo, index=360)


def test_digits_example_without_a_build(tmp_path: Path) -> None:
    with pytest.raises(UsageError, match="leanserve demo"):
        digits_example(tmp_path)
