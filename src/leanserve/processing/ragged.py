"""Ragged batching: requests of different lengths share an engine run, each batch padded to its longest.

A sentence is 10-30 tokens; padding every one to 128 multiplies the engine's work several times,
and without padding requests of different lengths could never share a batch. An input declared
with ``pad_value`` (or ``mask = true``) in model.toml is ragged along its first dimension after
the batch. Requests of any lengths may share a run, and each batch is padded only to its longest
member; which ones run together is :mod:`.grouping`'s choice (padding a short sentence to a long
one costs more than a run of its own). The mask input, 1 over each request's own positions and 0
over the padding, keeps the padding from changing the result; a request may leave it out and get
it built here.

Pure functions, no state: the engine stage (:mod:`leanserve.processing.stages`) calls them.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from ..config import TensorSpec
from ..errors import InvalidInput

Tensors = dict[str, np.ndarray]


@dataclass(frozen=True, slots=True)
class Padding:
    """How a model's ragged inputs are padded: value per ragged input, and the mask input if any."""

    values: Mapping[str, float]  # ragged input -> pad value (the mask's is 0)
    mask: str | None

    @classmethod
    def of(cls, inputs: Sequence[TensorSpec]) -> Padding | None:
        """The padding the model's inputs declare; None when none is ragged."""
        values = {
            s.name: (0.0 if s.pad_value is None else s.pad_value) for s in inputs if s.pad_value is not None or s.mask
        }
        if not values:
            return None
        mask = next((s.name for s in inputs if s.mask), None)
        return cls(values, mask)


def ragged_key(inputs: Mapping[str, np.ndarray], padding: Padding) -> tuple[object, ...]:
    """What must be equal for two requests to share a padded batch (batching.batch_key for ragged inputs):
    everything but the ragged inputs' lengths."""
    key: list[object] = []
    for name in sorted(inputs):
        a = inputs[name]
        if name in padding.values and a.ndim >= 2:
            key.append((name, a.dtype, a.shape[2:]))
        else:
            key.append((name, a.dtype, a.shape[1:]))
    return tuple(key)


def ragged_length(inputs: Mapping[str, np.ndarray], padding: Padding) -> int:
    """The length a batch pads this request to at least: its longest ragged input."""
    return max((a.shape[1] for name, a in inputs.items() if name in padding.values and a.ndim >= 2), default=0)


def with_mask(inputs: Mapping[str, np.ndarray], padding: Padding) -> Tensors:
    """The request's inputs with the mask built when it left it out (ones over its own length)."""
    result = dict(inputs)
    mask = padding.mask
    if mask is None or mask in result:
        return result
    for name, a in result.items():
        if name in padding.values and a.ndim >= 2:
            result[mask] = np.ones(a.shape[:2], dtype=np.int64)
            return result
    raise InvalidInput(f"cannot build the mask {mask!r}: the request carries no ragged input to take its length from")


def pad_batch(parts: Sequence[Mapping[str, np.ndarray]], padding: Padding) -> Tensors:
    """The parts' inputs as one batch: ragged inputs padded to the longest part, the rest concatenated."""
    if len(parts) == 1:
        return dict(parts[0])
    batch: Tensors = {}
    for name in parts[0]:
        arrays = [p[name] for p in parts]
        longest = max(a.shape[1] for a in arrays) if name in padding.values and arrays[0].ndim >= 2 else 0
        if not longest or all(a.shape[1] == longest for a in arrays):
            batch[name] = np.concatenate(arrays)
            continue
        first = arrays[0]
        out = np.full((sum(a.shape[0] for a in arrays), longest, *first.shape[2:]), padding.values[name], first.dtype)
        row = 0
        for a in arrays:
            out[row : row + a.shape[0], : a.shape[1]] = a
            row += a.shape[0]
        batch[name] = out
    return batch


__all__ = ["Padding", "pad_batch", "ragged_key", "ragged_length", "with_mask"]
