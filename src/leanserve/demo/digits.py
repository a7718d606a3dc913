"""The ``digits`` demo model: a CNN on scikit-learn's bundled 8x8 digits, trained in seconds.

Clients send ``png`` (BYTES ``[batch]``, PNG bytes or their base64 text), decoded on the server by
``handler.py`` (:mod:`leanserve.demo.handlers.digits`), or the engine's own ``image``, FP32
``[batch, 1, 8, 8]`` with pixels in [0, 1] (the dataset's 0..16 divided by 16). Outputs are
``logits`` and ``probabilities``, both FP32 ``[batch, 10]``.
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import tomli_w
import torch
from torch import nn

from ..errors import ServerError
from ..optimization.export import ExportSpec, compare_with_torch, export_onnx
from .handlers import handler_source
from .progress import Progress, StepTimes

NAME = "digits"
SEED = 0
EPOCHS = 6
TRAIN_BATCH = 32
TEST_FRACTION = 0.2
MIN_ACCURACY = 0.97
PIXEL_SCALE = 16.0
SPEC = ExportSpec(
    input_names=("image",),
    output_names=("logits", "probabilities"),
    dynamic_axes={"image": {0: "batch"}, "logits": {0: "batch"}, "probabilities": {0: "batch"}},
)


@dataclass(frozen=True, slots=True)
class DigitsSplit:
    train_images: np.ndarray  # float32 [n, 1, 8, 8] in [0, 1]
    train_labels: np.ndarray  # int64 [n]
    test_images: np.ndarray
    test_labels: np.ndarray


def load_split() -> DigitsSplit:
    """The digits data, split 80/20 stratified by class with a fixed seed (the same split every time)."""
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    data = load_digits()
    images = (np.asarray(data.images, dtype=np.float32) / PIXEL_SCALE)[:, None, :, :]
    labels = np.asarray(data.target, dtype=np.int64)
    train_x, test_x, train_y, test_y = train_test_split(
        images, labels, test_size=TEST_FRACTION, stratify=labels, random_state=SEED
    )
    return DigitsSplit(train_x, train_y, test_x, test_y)


class DigitsCNN(nn.Module):
    # Far wider than 8x8 digits need (a 1->16->32 net reaches 0.98 too), on purpose: in so small
    # a net ONNX Runtime's per-call overhead is most of the time and int8 has nothing to win. At
    # about 10 million multiply-adds an image the convolutions dominate, as in real CNNs, so the
    # demo shows what `leanserve optimize` buys; training still takes seconds.
    def __init__(self) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(1, 64, 3, padding=1),
            nn.ReLU(),
            nn.Conv2d(64, 128, 3, padding=1),
            nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Conv2d(128, 256, 3, padding=1),
            nn.ReLU(),
            nn.MaxPool2d(2),
        )
        self.classifier = nn.Sequential(nn.Flatten(), nn.Linear(256 * 2 * 2, 256), nn.ReLU(), nn.Linear(256, 10))

    def forward(self, image: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        logits = self.classifier(self.features(image))
        return logits, torch.softmax(logits, dim=1)


def train(split: DigitsSplit, progress: Progress, epochs: int = EPOCHS) -> DigitsCNN:
    # One thread: on a busy machine OpenMP threads waiting on each other made training ten
    # times slower. fork_rng: seeding must not change the random stream of whoever called us.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        with torch.random.fork_rng():
            torch.manual_seed(SEED)
            return _train(split, progress, epochs)
    finally:
        torch.set_num_threads(threads)


def _train(split: DigitsSplit, progress: Progress, epochs: int) -> DigitsCNN:
    model = DigitsCNN()
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)
    loss_fn = nn.CrossEntropyLoss()
    images = torch.from_numpy(split.train_images)
    labels = torch.from_numpy(split.train_labels)
    model.train()
    for epoch in range(1, epochs + 1):
        order = torch.randperm(len(labels))
        total = 0.0
        for start in range(0, len(labels), TRAIN_BATCH):
            idx = order[start : start + TRAIN_BATCH]
            optimizer.zero_grad()
            loss = loss_fn(model(images[idx])[0], labels[idx])
            loss.backward()
            optimizer.step()
            total += loss.item() * len(idx)
        if epoch % 2 == 0 or epoch == epochs:
            progress(f"training digits CNN: epoch {epoch}/{epochs}, loss {total / len(labels):.4f}")
    return model.eval()


def onnx_accuracy(model_path: Path, images: np.ndarray, labels: np.ndarray) -> float:
    import onnxruntime as ort

    session = ort.InferenceSession(str(model_path), providers=["CPUExecutionProvider"])
    logits = session.run(["logits"], {"image": images})[0]
    return float(np.mean(np.argmax(logits, axis=1) == labels))


def build(model_dir: Path, progress: Progress, times: StepTimes) -> None:
    """Train, export and verify the model; write ``1/model.onnx``, ``model.toml`` and ``eval.npz``."""
    with times.step(progress, "loading the digits data set"):
        split = load_split()
    with times.step(progress, "training digits CNN"):
        model = train(split, progress)
    model_path = model_dir / "1" / "model.onnx"
    model_path.parent.mkdir(parents=True)
    with times.step(progress, "exporting digits to ONNX"):
        exporter = export_onnx(model, (torch.from_numpy(split.test_images[:2]),), model_path, SPEC, progress)
    with times.step(progress, "verifying digits ONNX against PyTorch"):
        feeds = [{"image": split.test_images[:n]} for n in (1, 5, len(split.test_images))]
        difference = compare_with_torch(model_path, model, feeds, SPEC)
        if difference > 1e-4:
            raise ServerError(f"digits: ONNX differs from PyTorch by {difference:.2e}")
        accuracy = onnx_accuracy(model_path, split.test_images, split.test_labels)
        if accuracy < MIN_ACCURACY:
            raise ServerError(f"digits: held-out accuracy {accuracy:.3f} is below {MIN_ACCURACY}")
    progress(f"digits: held-out accuracy {accuracy:.2%} on {len(split.test_labels)} images")
    np.savez(model_dir / "eval.npz", image=split.test_images, labels=split.test_labels)
    shutil.copyfile(handler_source(NAME), model_dir / "handler.py")
    (model_dir / "model.toml").write_text(tomli_w.dumps(model_toml(accuracy, exporter)), encoding="utf-8")


def model_toml(accuracy: float, exporter: str) -> dict[str, object]:
    return {
        "max_batch_size": 32,
        "input": [{"name": "image", "datatype": "FP32", "shape": [1, 8, 8]}],
        "output": [
            {"name": "logits", "datatype": "FP32", "shape": [10]},
            {"name": "probabilities", "datatype": "FP32", "shape": [10]},
        ],
        "handler": {
            "input": [{"name": "png", "datatype": "BYTES", "shape": []}],
            "output": [
                {"name": "logits", "datatype": "FP32", "shape": [10]},
                {"name": "probabilities", "datatype": "FP32", "shape": [10]},
            ],
        },
        # 0 ms: an idle model answers a lone request at once; bursts are still batched.
        "dynamic_batching": {"max_queue_delay_ms": 0.0},
        "runtime": {"intra_op_threads": 1},
        "metadata": {
            "description": "Handwritten digit classifier: a three-layer CNN trained on scikit-learn's 8x8 digits.",
            "labels": [str(d) for d in range(10)],
            "input_scaling": "pixel values 0..16 divided by 16, so in [0, 1]",
            "dataset": f"sklearn.datasets.load_digits, stratified {1 - TEST_FRACTION:.0%}/{TEST_FRACTION:.0%} "
            f"split, seed {SEED}",
            "accuracy": round(accuracy, 4),
            "accuracy_split": "held-out test set (eval.npz)",
            "exporter": exporter,
        },
    }
