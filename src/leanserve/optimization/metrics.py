"""Accuracy metrics: how close a variant's outputs are to the original's (or to the labels).

Every metric compares the original's outputs (``reference``) with a variant's (``candidate``)
on the held-out split. Built-in metrics read one output tensor (the first, unless told);
a user function ``module:function`` receives every output::

    def my_metric(reference: Mapping[str, np.ndarray], candidate: Mapping[str, np.ndarray],
                  labels: np.ndarray | None) -> float:   # higher is better
"""

from __future__ import annotations

import importlib
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from typing import Protocol

import numpy as np

from ..errors import UsageError

Outputs = Mapping[str, np.ndarray]
METRICS: tuple[str, ...] = ("accuracy", "top1", "cosine", "iou", "mae", "max_error")


@dataclass(frozen=True, slots=True)
class Score:
    value: float  # the figure the budget judges
    worst: float | None = None  # the worst single example, for metrics that have one
    # The same metric on each group's examples alone (a language, a segment): an average can hide
    # a group that quantization wrecks.
    groups: Mapping[str, Score] = field(default_factory=dict)


class Metric(Protocol):
    @property
    def name(self) -> str: ...

    @property
    def higher_is_better(self) -> bool: ...

    @property
    def points(self) -> bool:
        """Whether the metric is a fraction judged in points ("1%" = one point below the original)."""
        ...

    def score(self, reference: Outputs, candidate: Outputs, labels: np.ndarray | None) -> Score: ...


def _predictions(array: np.ndarray) -> np.ndarray:
    if array.ndim >= 2 and array.shape[-1] > 1:
        return np.asarray(np.argmax(array.reshape(len(array), -1, array.shape[-1]), axis=-1)).reshape(len(array), -1)
    if np.issubdtype(array.dtype, np.integer):
        return array.reshape(len(array), -1)
    return (array.reshape(len(array), -1) > 0.5).astype(np.int64)  # a single probability per example


@dataclass(frozen=True, slots=True)
class Accuracy:
    output: str
    name: str = "accuracy"
    higher_is_better: bool = True
    points: bool = True

    def score(self, reference: Outputs, candidate: Outputs, labels: np.ndarray | None) -> Score:
        if labels is None:
            raise UsageError("the accuracy metric needs labels", hint="name the labels array with --labels")
        predicted = _predictions(candidate[self.output])
        truth = np.asarray(labels).reshape(len(labels), -1)
        if predicted.shape != truth.shape:
            raise UsageError(
                f"labels have shape {labels.shape}, but output {self.output!r} predicts {predicted.shape}",
                hint="labels hold one class index per example",
            )
        return Score(float(np.mean(np.all(predicted == truth, axis=1))))


@dataclass(frozen=True, slots=True)
class Top1Agreement:
    output: str
    name: str = "top1"
    higher_is_better: bool = True
    points: bool = True

    def score(self, reference: Outputs, candidate: Outputs, labels: np.ndarray | None) -> Score:
        same = _predictions(reference[self.output]) == _predictions(candidate[self.output])
        return Score(float(np.mean(np.all(same, axis=1))))


def cosine_per_example(reference: np.ndarray, candidate: np.ndarray) -> np.ndarray:
    a = reference.reshape(len(reference), -1).astype(np.float64)
    b = candidate.reshape(len(candidate), -1).astype(np.float64)
    na, nb = np.linalg.norm(a, axis=1), np.linalg.norm(b, axis=1)
    dot = np.sum(a * b, axis=1)
    both_zero = (na == 0) & (nb == 0)
    with np.errstate(invalid="ignore", divide="ignore"):
        cos = np.where(both_zero, 1.0, dot / np.maximum(na * nb, 1e-300))
    return np.asarray(np.clip(cos, -1.0, 1.0))


@dataclass(frozen=True, slots=True)
class Cosine:
    output: str
    name: str = "cosine"
    higher_is_better: bool = True
    points: bool = False

    def score(self, reference: Outputs, candidate: Outputs, labels: np.ndarray | None) -> Score:
        cos = cosine_per_example(reference[self.output], candidate[self.output])
        return Score(float(np.mean(cos)), worst=float(np.min(cos)))


def masks(array: np.ndarray) -> np.ndarray:
    """Boolean masks, one row per example: integers and booleans where non-zero; floats are
    probabilities (above 0.5) when none is negative, else logits (above 0)."""
    flat = array.reshape(len(array), -1)
    if not np.issubdtype(flat.dtype, np.floating):
        return np.asarray(flat != 0)
    threshold = 0.5 if flat.size and float(flat.min()) >= 0.0 else 0.0
    return np.asarray(flat > threshold)


def iou_per_example(truth: np.ndarray, predicted: np.ndarray) -> np.ndarray:
    """Intersection over union of two boolean masks per example; two empty masks agree (1.0)."""
    intersection = np.sum(truth & predicted, axis=1)
    union = np.sum(truth | predicted, axis=1)
    return np.where(union == 0, 1.0, intersection / np.maximum(union, 1))


@dataclass(frozen=True, slots=True)
class IoU:
    """Segmentation: the mean intersection over union of the predicted masks with the labels' masks
    (or, without labels, with the original's), judged in points like accuracy."""

    output: str
    name: str = "iou"
    higher_is_better: bool = True
    points: bool = True

    def score(self, reference: Outputs, candidate: Outputs, labels: np.ndarray | None) -> Score:
        predicted = masks(candidate[self.output])
        truth = masks(reference[self.output]) if labels is None else masks(np.asarray(labels))
        if truth.shape != predicted.shape:
            raise UsageError(
                f"labels hold masks of {truth.shape[1]} pixels, but output {self.output!r} has {predicted.shape[1]}",
                hint="label one mask per example, of the output's size",
            )
        per_example = iou_per_example(truth, predicted)
        return Score(float(np.mean(per_example)), worst=float(np.min(per_example)))


@dataclass(frozen=True, slots=True)
class AbsoluteError:
    output: str
    reduce: str = "mean"  # "mean" (mae) or "max" (max_error)
    higher_is_better: bool = False
    points: bool = False

    @property
    def name(self) -> str:
        return "mae" if self.reduce == "mean" else "max_error"

    def score(self, reference: Outputs, candidate: Outputs, labels: np.ndarray | None) -> Score:
        err = np.abs(reference[self.output].astype(np.float64) - candidate[self.output].astype(np.float64))
        per_example = err.reshape(len(err), -1).max(axis=1)
        value = float(err.mean()) if self.reduce == "mean" else float(err.max())
        return Score(value, worst=float(per_example.max()))


@dataclass(frozen=True, slots=True)
class UserMetric:
    function: Callable[[Outputs, Outputs, np.ndarray | None], float]
    name: str
    higher_is_better: bool = True
    points: bool = True

    def score(self, reference: Outputs, candidate: Outputs, labels: np.ndarray | None) -> Score:
        value = self.function(reference, candidate, labels)
        if isinstance(value, bool) or not isinstance(value, (int, float, np.floating, np.integer)):
            raise UsageError(f"metric {self.name} returned {value!r}, not a number")
        if not math.isfinite(float(value)):
            raise UsageError(f"metric {self.name} returned {value}, not a finite number")
        return Score(float(value))


def score_groups(
    metric: Metric, reference: Outputs, candidate: Outputs, labels: np.ndarray | None, groups: np.ndarray | None
) -> Score:
    """``metric`` over every example, and (when ``groups`` names one per example) over each group alone."""
    overall = metric.score(reference, candidate, labels)
    if groups is None:
        return overall
    by_group: dict[str, Score] = {}
    for group in sorted(set(groups.tolist())):
        rows = np.flatnonzero(groups == group)
        by_group[str(group)] = metric.score(
            {k: v[rows] for k, v in reference.items()},
            {k: v[rows] for k, v in candidate.items()},
            None if labels is None else labels[rows],
        )
    return replace(overall, groups=by_group)


def worst_group(score: Score, higher_is_better: bool) -> str | None:
    """The group with the worst figure, or None when the score has no groups."""
    if not score.groups:
        return None
    pick = min if higher_is_better else max
    return pick(score.groups, key=lambda g: score.groups[g].value)


def make_metric(spec: str, output: str, has_labels: bool) -> Metric:
    """Build a metric from its name, ``module:function``, or ``auto`` (accuracy with labels, else top1)."""
    if spec == "auto":
        spec = "accuracy" if has_labels else "top1"
    if spec == "accuracy":
        if not has_labels:
            raise UsageError("the accuracy metric needs labels", hint="name the labels array with --labels")
        return Accuracy(output)
    if spec == "top1":
        return Top1Agreement(output)
    if spec == "cosine":
        return Cosine(output)
    if spec == "iou":
        return IoU(output)
    if spec in ("mae", "max_error"):
        return AbsoluteError(output, reduce="mean" if spec == "mae" else "max")
    if ":" in spec:
        return UserMetric(load_function(spec), name=spec)
    raise UsageError(
        f"unknown metric {spec!r}",
        hint=f"use one of {', '.join(METRICS)}, or module:function for your own (higher is better)",
    )


def load_function(spec: str) -> Callable[[Outputs, Outputs, np.ndarray | None], float]:
    module_name, _, attr = spec.partition(":")
    try:
        module = importlib.import_module(module_name)
    except ImportError as e:
        raise UsageError(f"cannot import metric module {module_name!r}: {e}", hint="is it on PYTHONPATH?") from e
    fn = getattr(module, attr, None)
    if not callable(fn):
        raise UsageError(f"{module_name} has no function {attr!r}")
    return fn  # type: ignore[no-any-return]
