"""``shapes-seg``'s handler: PNG in, the mask out as a tensor and as a PNG, at the image's own size.

``preprocess`` decodes each PNG (raw bytes, or base64 text from JSON clients), keeps its size in
``size`` (a tensor the engine does not take: it travels past the engine to ``postprocess``) and
resizes it to the network's 64x64. ``postprocess`` thresholds the probabilities at 0.5 and brings
the mask back to the image's size. Every image of one request must share its size (a tensor has
one shape); requests of different sizes still share a batch, since the engine sees 64x64 only.
"""

from __future__ import annotations

import numpy as np

from leanserve import InvalidInput
from leanserve.demo.handlers.images import decode_gray, encode_png, resize

SIDE = 64


def preprocess(requests: list[dict[str, np.ndarray]]) -> list[dict[str, np.ndarray]]:
    out = []
    for request in requests:
        items = request["png"].reshape(-1)
        grays = [decode_gray(item, f"input 'png' element {row}") for row, item in enumerate(items)]
        if len({g.shape for g in grays}) > 1:
            raise InvalidInput("input 'png': the images of one request must share a size (send others apart)")
        images = np.stack([resize(g, SIDE, SIDE) for g in grays])[:, None]
        sizes = np.array([g.shape for g in grays], dtype=np.int64)
        out.append({"image": images, "size": sizes})
    return out


def postprocess(
    outputs: list[dict[str, np.ndarray]], requests: list[dict[str, np.ndarray]]
) -> list[dict[str, np.ndarray]]:
    out = []
    for o in outputs:
        masks = (o["probability"][:, 0] > 0.5).astype(np.uint8)
        sizes = o.get("size")  # absent when the client sent the 64x64 tensor itself
        if sizes is not None and tuple(sizes[0]) != (SIDE, SIDE):
            height, width = (int(v) for v in sizes[0])
            masks = np.stack([_nearest(m, height, width) for m in masks])
        pngs = np.array([encode_png(m.astype(np.float32)) for m in masks], dtype=object)
        out.append({"mask": masks, "mask_png": pngs})
    return out


def _nearest(mask: np.ndarray, height: int, width: int) -> np.ndarray:
    rows = np.minimum((np.arange(height) * mask.shape[0]) // height, mask.shape[0] - 1)
    cols = np.minimum((np.arange(width) * mask.shape[1]) // width, mask.shape[1] - 1)
    result: np.ndarray = mask[rows][:, cols]
    return result
