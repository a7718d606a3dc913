"""The ``shapes-seg`` demo model: a small attention U-Net segmenting shapes on noise, trained in seconds.

It stands for the medical-imaging users (attention-based segmentation networks): synthetic
64x64 grayscale images, one to three discs, boxes and triangles brighter than a noisy, uneven
background, with their exact mask known, so the mask's quality (IoU) is measured, not guessed.

Clients send ``png`` (BYTES ``[batch]``, PNG bytes or base64 text; any size, resized to 64x64),
or the engine's ``image`` (FP32 ``[batch, 1, 64, 64]`` in [0, 1]). The answer holds ``mask``
(UINT8 ``[batch, H, W]``, 1 inside a shape, at the image's own size) and ``mask_png`` (BYTES
``[batch]``, the same mask as a PNG, 255 inside), sent over the binary tensor extension.
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
from ..optimization.metrics import iou_per_example
from .handlers import handler_source
from .handlers.images import encode_png
from .progress import Progress, StepTimes

NAME = "shapes-seg"
SIDE = 64
SEED = 0
TRAIN_IMAGES = 512
EVAL_IMAGES = 128
EPOCHS = 5
TRAIN_BATCH = 32
MIN_IOU = 0.85
EXAMPLE = "example.png"
SPEC = ExportSpec(
    input_names=("image",),
    output_names=("probability",),
    dynamic_axes={"image": {0: "batch"}, "probability": {0: "batch"}},
)


@dataclass(frozen=True, slots=True)
class Shapes:
    images: np.ndarray  # float32 [n, 1, 64, 64] in [0, 1]
    masks: np.ndarray  # uint8 [n, 1, 64, 64], 1 inside a shape


def synthetic_shapes(count: int, seed: int, side: int = SIDE) -> Shapes:
    """``count`` images of one to three shapes on noise, with their masks (the same for the same seed)."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:side, 0:side].astype(np.float32)
    images = np.empty((count, 1, side, side), dtype=np.float32)
    masks = np.zeros((count, 1, side, side), dtype=np.uint8)
    for i in range(count):
        mask = np.zeros((side, side), dtype=bool)
        for _ in range(int(rng.integers(1, 4))):
            cy, cx = rng.uniform(8, side - 8, size=2)
            size = rng.uniform(5, 14)
            kind = int(rng.integers(0, 3))
            if kind == 0:  # a disc
                shape = (yy - cy) ** 2 + (xx - cx) ** 2 <= size**2
            elif kind == 1:  # a box
                h, w = rng.uniform(0.5, 1.0, size=2) * size
                shape = (np.abs(yy - cy) <= h) & (np.abs(xx - cx) <= w)
            else:  # a triangle, apex up
                shape = (yy <= cy + size) & (yy >= cy - size) & (np.abs(xx - cx) <= (yy - cy + size) / 2)
            mask |= shape
        # An uneven background (a gradient, as a scanner's) under noise; shapes brighter, also noisy.
        gx, gy = rng.uniform(-0.15, 0.15, size=2)
        background = 0.3 + gx * (xx / side - 0.5) + gy * (yy / side - 0.5)
        image = np.where(mask, rng.uniform(0.55, 0.8), background)
        image = image + rng.normal(0.0, 0.12, size=(side, side))
        images[i, 0] = np.clip(image, 0.0, 1.0)
        masks[i, 0] = mask
    return Shapes(images, masks)


class _Conv(nn.Sequential):
    def __init__(self, cin: int, cout: int) -> None:
        super().__init__(
            nn.Conv2d(cin, cout, 3, padding=1),
            nn.BatchNorm2d(cout),
            nn.ReLU(),
            nn.Conv2d(cout, cout, 3, padding=1),
            nn.BatchNorm2d(cout),
            nn.ReLU(),
        )


class AttentionGate(nn.Module):
    """Attention U-Net's gate: the coarser decoder features decide which skip features pass."""

    def __init__(self, skip: int, gate: int, inner: int) -> None:
        super().__init__()
        self.skip = nn.Conv2d(skip, inner, 1)
        self.gate = nn.Conv2d(gate, inner, 1)
        self.weight = nn.Sequential(nn.ReLU(), nn.Conv2d(inner, 1, 1), nn.Sigmoid())

    def forward(self, skip: torch.Tensor, gate: torch.Tensor) -> torch.Tensor:
        attention: torch.Tensor = self.weight(self.skip(skip) + self.gate(gate))
        return skip * attention


class ShapesUNet(nn.Module):
    """A two-level U-Net with attention gates on its skips: 64x64 in, a probability per pixel out."""

    def __init__(self, width: int = 8) -> None:
        super().__init__()
        w = width
        self.down1 = _Conv(1, w)
        self.down2 = _Conv(w, 2 * w)
        self.bottom = _Conv(2 * w, 4 * w)
        self.pool = nn.MaxPool2d(2)
        self.up2 = nn.ConvTranspose2d(4 * w, 2 * w, 2, stride=2)
        self.gate2 = AttentionGate(2 * w, 2 * w, w)
        self.dec2 = _Conv(4 * w, 2 * w)
        self.up1 = nn.ConvTranspose2d(2 * w, w, 2, stride=2)
        self.gate1 = AttentionGate(w, w, w // 2)
        self.dec1 = _Conv(2 * w, w)
        self.head = nn.Conv2d(w, 1, 1)

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        s1 = self.down1(image)
        s2 = self.down2(self.pool(s1))
        bottom = self.bottom(self.pool(s2))
        u2 = self.up2(bottom)
        d2 = self.dec2(torch.cat([self.gate2(s2, u2), u2], dim=1))
        u1 = self.up1(d2)
        d1 = self.dec1(torch.cat([self.gate1(s1, u1), u1], dim=1))
        return torch.sigmoid(self.head(d1))


def train(data: Shapes, progress: Progress, epochs: int = EPOCHS) -> ShapesUNet:
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # see digits.train: on a busy machine one thread is the fastest
    try:
        with torch.random.fork_rng():
            torch.manual_seed(SEED)
            model = ShapesUNet()
            optimizer = torch.optim.Adam(model.parameters(), lr=5e-3)
            loss_fn = nn.BCELoss()
            images = torch.from_numpy(data.images)
            masks = torch.from_numpy(data.masks.astype(np.float32))
            model.train()
            for epoch in range(1, epochs + 1):
                order = torch.randperm(len(images))
                total = 0.0
                for start in range(0, len(images), TRAIN_BATCH):
                    idx = order[start : start + TRAIN_BATCH]
                    optimizer.zero_grad()
                    loss = loss_fn(model(images[idx]), masks[idx])
                    loss.backward()
                    optimizer.step()
                    total += loss.item() * len(idx)
                progress(f"training shapes-seg U-Net: epoch {epoch}/{epochs}, loss {total / len(images):.4f}")
            return model.eval()
    finally:
        torch.set_num_threads(threads)


def mean_iou(probability: np.ndarray, masks: np.ndarray) -> float:
    predicted = (probability > 0.5).reshape(len(probability), -1)
    return float(np.mean(iou_per_example(masks.reshape(len(masks), -1) > 0, predicted)))


def build(model_dir: Path, progress: Progress, times: StepTimes) -> None:
    """Generate data, train, export and verify; write ``1/model.onnx``, ``model.toml``, ``handler.py``, ``eval.npz``."""
    with times.step(progress, "generating shapes-seg images"):
        train_set = synthetic_shapes(TRAIN_IMAGES, SEED)
        held_out = synthetic_shapes(EVAL_IMAGES, SEED + 1)
    with times.step(progress, "training shapes-seg U-Net"):
        model = train(train_set, progress)
    model_path = model_dir / "1" / "model.onnx"
    model_path.parent.mkdir(parents=True)
    with times.step(progress, "exporting shapes-seg to ONNX"):
        exporter = export_onnx(model, (torch.from_numpy(held_out.images[:2]),), model_path, SPEC, progress)
    with times.step(progress, "verifying shapes-seg ONNX against PyTorch"):
        feeds = [{"image": held_out.images[:n]} for n in (1, 8)]
        difference = compare_with_torch(model_path, model, feeds, SPEC)
        if difference > 1e-4:
            raise ServerError(f"shapes-seg: ONNX differs from PyTorch by {difference:.2e}")
        import onnxruntime as ort

        session = ort.InferenceSession(str(model_path), providers=["CPUExecutionProvider"])
        iou = mean_iou(session.run(["probability"], {"image": held_out.images})[0], held_out.masks)
        if iou < MIN_IOU:
            raise ServerError(f"shapes-seg: held-out IoU {iou:.3f} is below {MIN_IOU}")
    progress(f"shapes-seg: held-out IoU {iou:.3f} on {EVAL_IMAGES} images")
    np.savez(model_dir / "eval.npz", image=held_out.images, mask=held_out.masks)
    # A held-out image for the demo's curl example (the repository is generated, never committed).
    (model_dir / EXAMPLE).write_bytes(encode_png(held_out.images[0, 0]))
    shutil.copyfile(handler_source(NAME), model_dir / "handler.py")
    (model_dir / "model.toml").write_text(tomli_w.dumps(model_toml(iou, exporter)), encoding="utf-8")


def model_toml(iou: float, exporter: str) -> dict[str, object]:
    return {
        "max_batch_size": 16,
        "input": [{"name": "image", "datatype": "FP32", "shape": [1, SIDE, SIDE]}],
        "output": [{"name": "probability", "datatype": "FP32", "shape": [1, SIDE, SIDE]}],
        "handler": {
            "input": [{"name": "png", "datatype": "BYTES", "shape": []}],
            "output": [
                {"name": "mask", "datatype": "UINT8", "shape": [-1, -1]},
                {"name": "mask_png", "datatype": "BYTES", "shape": []},
            ],
        },
        "dynamic_batching": {"max_queue_delay_ms": 0.0},
        "runtime": {"intra_op_threads": 1},
        "metadata": {
            "description": "Segmentation: a small attention U-Net finding shapes on noisy synthetic images; "
            "PNG in, the mask out as a tensor and as a PNG.",
            "input_scaling": "gray levels in [0, 1]; PNGs of any size are resized to 64x64, masks back",
            "iou": round(iou, 4),
            "iou_split": f"{EVAL_IMAGES} held-out synthetic images (eval.npz), seed {SEED + 1}",
            "exporter": exporter,
        },
    }
