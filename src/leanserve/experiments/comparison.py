"""How a shadow candidate's answer compares with the control's: agreement, cosine, largest error.

Agreement is what an operator can read as a rate: for scores over classes (a floating output
of two or more dimensions whose last axis has several entries) the predicted class, the argmax, must match on every row;
for anything else the values must match within a tolerance. Cosine similarity and the largest
absolute difference are kept beside it, for embeddings and regressions where "agree" is a
matter of degree.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np

# Tolerances for outputs compared by value: loose enough for a quantized or fused variant's
# rounding, tight enough that a wrong model never passes.
RTOL = 1e-3
ATOL = 1e-5


@dataclass(frozen=True, slots=True)
class Comparison:
    agree: bool
    similarity: float  # cosine of all numeric outputs, flattened; 1.0 when both are all zeros
    max_abs_error: float  # inf when the outputs do not even have the same names and shapes


def _agree(a: np.ndarray, b: np.ndarray) -> bool:
    if a.dtype.kind not in "fiub" or b.dtype.kind not in "fiub":
        return bool(np.array_equal(a, b))
    # Rows of scores: [batch, classes]. A 1-D output may be a batch of regressions, whose argmax
    # would compare rows with each other, so it is compared by value.
    if a.dtype.kind == "f" and a.ndim >= 2 and a.shape[-1] > 1:
        return bool(np.array_equal(np.argmax(a, axis=-1), np.argmax(b, axis=-1)))
    return bool(np.allclose(a, b, rtol=RTOL, atol=ATOL))


def compare_outputs(control: Mapping[str, np.ndarray], candidate: Mapping[str, np.ndarray]) -> Comparison:
    """Compare the outputs two versions gave to the same request."""
    if control.keys() != candidate.keys() or any(control[k].shape != candidate[k].shape for k in control):
        return Comparison(False, 0.0, math.inf)
    agree = all(_agree(control[k], candidate[k]) for k in control)
    numeric = [k for k in control if control[k].dtype.kind in "fiub" and candidate[k].dtype.kind in "fiub"]
    if not numeric:
        return Comparison(agree, 1.0 if agree else 0.0, 0.0 if agree else math.inf)
    a = np.concatenate([control[k].astype(np.float64).ravel() for k in numeric])
    b = np.concatenate([candidate[k].astype(np.float64).ravel() for k in numeric])
    norm = float(np.linalg.norm(a) * np.linalg.norm(b))
    similarity = (1.0 if not a.any() and not b.any() else 0.0) if norm == 0 else float(np.dot(a, b) / norm)
    max_abs = float(np.max(np.abs(a - b))) if a.size else 0.0
    return Comparison(agree, similarity, max_abs)
