"""Decoding images sent as BYTES: PNG (or any format Pillow reads), raw or base64 (JSON carries only text)."""

from __future__ import annotations

import base64
import binascii
import io

import numpy as np

from leanserve import InvalidInput

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
MAX_PIXELS = 4096 * 4096  # a decompression bomb is the caller's mistake, not the server's memory


def image_bytes(item: object, where: str) -> bytes:
    """The encoded image of one BYTES element: raw bytes, or base64 text (what a JSON client sends)."""
    raw = item if isinstance(item, bytes) else str(item).encode()
    if raw[:4] in (PNG_SIGNATURE[:4], b"\xff\xd8\xff\xe0", b"\xff\xd8\xff\xe1", b"GIF8") or raw[:2] == b"BM":
        return raw
    try:
        return base64.b64decode(raw, validate=True)
    except (binascii.Error, ValueError):
        raise InvalidInput(f"{where}: neither an image nor base64 text of one") from None


def decode_gray(item: object, where: str) -> np.ndarray:
    """One image as float32 gray levels in [0, 1], ``[height, width]``."""
    from PIL import Image, UnidentifiedImageError

    data = image_bytes(item, where)
    try:
        with Image.open(io.BytesIO(data)) as image:
            if image.width * image.height > MAX_PIXELS:
                raise InvalidInput(f"{where}: {image.width}x{image.height} pixels is more than this model takes")
            gray = np.asarray(image.convert("L"), dtype=np.float32) / 255.0
    except (UnidentifiedImageError, OSError, ValueError) as e:
        raise InvalidInput(f"{where}: not a readable image ({e})") from None
    return gray


def resize(gray: np.ndarray, height: int, width: int) -> np.ndarray:
    """``gray`` resampled to ``height`` x ``width`` (area-averaged, as a scanner's downsampling)."""
    if gray.shape == (height, width):
        return gray
    from PIL import Image

    image = Image.fromarray(np.clip(gray * 255.0, 0, 255).astype(np.uint8))
    return np.asarray(image.resize((width, height), Image.Resampling.BOX), dtype=np.float32) / 255.0


def encode_png(gray: np.ndarray) -> bytes:
    """A 2-D array of levels in [0, 1] (or a 0/1 mask) as an 8-bit grayscale PNG."""
    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray(np.clip(np.rint(gray * 255.0), 0, 255).astype(np.uint8)).save(buffer, format="PNG")
    return buffer.getvalue()
