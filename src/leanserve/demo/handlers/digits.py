"""``digits``'s handler: a PNG of a handwritten digit in, the 8x8 image the CNN takes, and the digit out.

Clients send ``png`` (BYTES ``[batch]``: PNG bytes, or base64 text of them from JSON clients), or
the engine's own ``image`` tensor (FP32 ``[batch, 1, 8, 8]``). An image of any size is area-averaged
down to 8x8; dark ink on light paper (a scan, a drawing) is inverted to the dataset's light ink on
black. Both ways the answer is the engine's ``logits`` and ``probabilities``. There is no
postprocess: a client sending the tensor takes the same path as a model without a handler.
"""

from __future__ import annotations

import numpy as np

from leanserve.demo.handlers.images import decode_gray, resize

SIDE = 8


def preprocess(requests: list[dict[str, np.ndarray]]) -> list[dict[str, np.ndarray]]:
    out = []
    for request in requests:
        items = request["png"].reshape(-1)
        images = np.empty((len(items), 1, SIDE, SIDE), dtype=np.float32)
        for row, item in enumerate(items):
            gray = resize(decode_gray(item, f"input 'png' element {row}"), SIDE, SIDE)
            images[row, 0] = 1.0 - gray if gray.mean() > 0.5 else gray
        out.append({"image": images})
    return out
