"""Shadow answers compared with the control's: class agreement, values within tolerance, cosine."""

from __future__ import annotations

import math

import numpy as np
import pytest

from leanserve.experiments.comparison import compare_outputs


def test_scores_agree_when_every_row_predicts_the_same_class() -> None:
    control = {"logits": np.array([[0.1, 0.7, 0.2], [0.9, 0.05, 0.05]], dtype=np.float32)}
    close = {"logits": np.array([[0.15, 0.6, 0.25], [0.8, 0.1, 0.1]], dtype=np.float32)}
    c = compare_outputs(control, close)
    assert c.agree and 0.98 < c.similarity < 1 and c.max_abs_error == pytest.approx(0.1, abs=1e-6)
    flipped = {"logits": control["logits"][:, ::-1].copy()}
    assert not compare_outputs(control, flipped).agree


def test_other_outputs_agree_within_tolerance() -> None:
    a = {"y": np.array([1.0, 2.0, 3.0])}
    assert compare_outputs(a, {"y": a["y"] * (1 + 1e-4)}).agree
    assert not compare_outputs(a, {"y": a["y"] + 0.1}).agree
    assert compare_outputs({"n": np.array([3])}, {"n": np.array([3])}).agree


def test_mismatched_names_or_shapes_never_agree() -> None:
    a = {"y": np.zeros((2, 3))}
    assert compare_outputs(a, {"z": np.zeros((2, 3))}).max_abs_error == math.inf
    assert not compare_outputs(a, {"y": np.zeros((3, 2))}).agree


def test_text_outputs_compare_by_equality_and_zeros_are_similar() -> None:
    words = {"label": np.array([b"cat", b"dog"], dtype=object)}
    assert compare_outputs(words, {"label": np.array([b"cat", b"dog"], dtype=object)}).agree
    assert not compare_outputs(words, {"label": np.array([b"cat", b"cow"], dtype=object)}).agree
    zeros = {"y": np.zeros(4)}
    assert compare_outputs(zeros, zeros).similarity == 1.0
