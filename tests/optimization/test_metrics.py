from __future__ import annotations

import sys
import types

import numpy as np
import pytest

from leanserve.errors import UsageError
from leanserve.optimization.metrics import make_metric, score_groups

REF = {"y": np.array([[0.1, 0.9], [0.8, 0.2], [0.3, 0.7]], np.float32)}
CAND = {"y": np.array([[0.2, 0.8], [0.1, 0.9], [0.4, 0.6]], np.float32)}


def test_accuracy_against_labels() -> None:
    m = make_metric("auto", "y", has_labels=True)
    assert m.name == "accuracy"
    assert m.score(REF, CAND, np.array([1, 0, 1])).value == pytest.approx(2 / 3)
    assert m.score(REF, REF, np.array([1, 0, 1])).value == 1.0


def test_top1_agreement_is_the_default_without_labels() -> None:
    m = make_metric("auto", "y", has_labels=False)
    assert m.name == "top1"
    assert m.score(REF, CAND, None).value == pytest.approx(2 / 3)


def test_cosine_mean_and_worst() -> None:
    m = make_metric("cosine", "y", has_labels=False)
    s = m.score(REF, CAND, None)
    a, b = REF["y"][1], CAND["y"][1]
    worst = float(a @ b / np.linalg.norm(a) / np.linalg.norm(b))
    assert s.worst == pytest.approx(worst, rel=1e-6)
    assert worst < s.value < 1.0
    assert m.score(REF, REF, None).value == pytest.approx(1.0)


def test_errors() -> None:
    mae, mx = make_metric("mae", "y", False), make_metric("max_error", "y", False)
    assert mae.score(REF, CAND, None).value == pytest.approx(float(np.abs(REF["y"] - CAND["y"]).mean()))
    assert mx.score(REF, CAND, None).value == pytest.approx(0.7)
    assert not mae.higher_is_better


def test_user_function(monkeypatch: pytest.MonkeyPatch) -> None:
    module = types.ModuleType("my_metrics")
    module.agree = lambda ref, cand, labels: float(np.mean(ref["y"].argmax(1) == cand["y"].argmax(1)))  # type: ignore[attr-defined]
    module.bad = lambda ref, cand, labels: "high"  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "my_metrics", module)
    assert make_metric("my_metrics:agree", "y", False).score(REF, CAND, None).value == pytest.approx(2 / 3)
    with pytest.raises(UsageError, match="not a number"):
        make_metric("my_metrics:bad", "y", False).score(REF, CAND, None)
    with pytest.raises(UsageError, match="no function"):
        make_metric("my_metrics:missing", "y", False)


def test_unknown_metric_and_accuracy_without_labels() -> None:
    with pytest.raises(UsageError, match="unknown metric"):
        make_metric("f1", "y", True)
    with pytest.raises(UsageError, match="needs labels"):
        make_metric("accuracy", "y", False)


def test_each_group_is_scored_on_its_own_examples_alone() -> None:
    cosine = make_metric("cosine", "y", has_labels=False)
    groups = np.array(["a", "b", "a"])
    s = score_groups(cosine, REF, CAND, None, groups)
    assert s.value == cosine.score(REF, CAND, None).value and set(s.groups) == {"a", "b"}
    alone = cosine.score({"y": REF["y"][[0, 2]]}, {"y": CAND["y"][[0, 2]]}, None)
    assert s.groups["a"].value == pytest.approx(alone.value) and s.groups["a"].worst == pytest.approx(alone.worst)
    # Example 1 is the worst overall and the only one in group b.
    assert s.groups["b"].value == pytest.approx(s.worst)

    accuracy = make_metric("accuracy", "y", has_labels=True)
    by_group = score_groups(accuracy, REF, CAND, np.array([1, 0, 1]), groups).groups
    assert by_group["a"].value == 1.0 and by_group["b"].value == 0.0


def test_without_groups_the_score_has_none() -> None:
    assert score_groups(make_metric("top1", "y", False), REF, CAND, None, None).groups == {}


def test_iou_against_labels_and_against_the_original() -> None:
    truth = np.zeros((2, 1, 4, 4), np.uint8)
    truth[0, 0, :2, :2] = 1  # 4 pixels
    truth[1, 0, :, :] = 1  # 16 pixels
    probability = np.zeros((2, 1, 4, 4), np.float32)
    probability[0, 0, :2, :1] = 0.9  # 2 of the 4: IoU 0.5
    probability[1] = 0.8  # all 16: IoU 1
    metric = make_metric("iou", "probability", has_labels=True)
    score = metric.score({"probability": probability}, {"probability": probability}, truth)
    assert score.value == pytest.approx(0.75) and score.worst == pytest.approx(0.5)
    assert metric.score({"probability": probability}, {"probability": probability}, None).value == 1.0
    logits = np.where(probability > 0.5, 3.0, -3.0).astype(np.float32)  # negatives: read as logits
    assert metric.score({}, {"probability": logits}, truth).value == pytest.approx(0.75)
    assert metric.points and metric.higher_is_better
