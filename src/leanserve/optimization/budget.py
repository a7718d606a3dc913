"""The accuracy budget: how far a variant may move from the original and still be served.

``--budget`` reads naturally for the metric:

* points metrics (accuracy, top1, iou, a user function): ``1%`` allows one point below the
  original's own figure; a plain number such as ``0.98`` is a floor.
* cosine: ``0.99`` is a floor on the mean similarity to the original; ``1%`` means the same.
  ``worst`` adds a floor on the least similar single example.
* mae / max_error: a plain number is a ceiling on the error; a percentage has no meaning.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

from ..errors import UsageError
from .metrics import Metric, Score

DEFAULT_BUDGETS: dict[str, str] = {"accuracy": "1%", "top1": "1%", "iou": "1%", "cosine": "0.99"}


@dataclass(frozen=True, slots=True)
class Budget:
    text: str
    metric: str
    kind: Literal["drop", "floor", "ceiling"]
    amount: float
    worst_floor: float | None = None

    def limit(self, original: Score) -> float:
        """The figure a variant must reach (floor) or stay under (ceiling)."""
        return original.value - self.amount if self.kind == "drop" else self.amount

    def check(self, score: Score, original: Score) -> Verdict:
        limit = self.limit(original)
        # A tiny tolerance: a variant identical to the original must pass "0 points".
        ok = score.value <= limit + 1e-12 if self.kind == "ceiling" else score.value >= limit - 1e-12
        sign = "<=" if self.kind == "ceiling" else ">="
        if not ok:
            return Verdict(False, f"{self.metric} {score.value:.4f} misses the budget ({sign} {limit:.4f})")
        if self.worst_floor is not None and score.worst is not None and score.worst < self.worst_floor:
            return Verdict(
                False,
                f"worst example {self.metric} {score.worst:.4f} is below the floor {self.worst_floor:.4f}",
            )
        return Verdict(True, f"{self.metric} {score.value:.4f} within the budget ({sign} {limit:.4f})")

    def describe(self) -> str:
        if self.kind == "drop":
            text = f"at most {self.amount * 100:g} points of {self.metric} below the original"
        elif self.kind == "floor":
            text = f"{self.metric} of at least {self.amount:g}"
        else:
            text = f"{self.metric} of at most {self.amount:g}"
        if self.worst_floor is not None:
            text += f", worst example at least {self.worst_floor:g}"
        return text


@dataclass(frozen=True, slots=True)
class Verdict:
    accepted: bool
    reason: str


def _number(text: str, what: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise UsageError(
            f"{what} {text!r} does not parse",
            hint="use a percentage such as '1%' (points below the original) or a number such as '0.99'",
        ) from None
    if not math.isfinite(value):
        raise UsageError(f"{what} {text!r} is not a finite number")
    return value


def parse_budget(text: str | float | None, metric: Metric, worst: str | float | None = None) -> Budget:
    """Read ``--budget`` (and ``--worst``) for ``metric``; every mistake is a UsageError."""
    if text is None:
        if metric.name not in DEFAULT_BUDGETS:
            raise UsageError(f"metric {metric.name} needs an explicit budget", hint="pass --budget, e.g. 1e-3")
        text = DEFAULT_BUDGETS[metric.name]
    raw = str(text).strip()
    if not raw:
        raise UsageError("the budget is empty", hint="use e.g. '1%' or '0.99'")
    worst_floor = _worst(worst, metric)
    if raw.endswith("%"):
        pct = _number(raw[:-1].strip(), "budget")
        if not 0.0 <= pct <= 100.0:
            raise UsageError(f"budget {raw!r} must be between 0% and 100%")
        if metric.points:
            return Budget(raw, metric.name, "drop", pct / 100.0, worst_floor)
        if metric.name == "cosine":
            return Budget(raw, metric.name, "floor", 1.0 - pct / 100.0, worst_floor)
        raise UsageError(
            f"a percentage budget has no meaning for {metric.name}",
            hint="give the largest error you accept, e.g. --budget 1e-3",
        )
    value = _number(raw, "budget")
    if not metric.higher_is_better:
        if value < 0:
            raise UsageError(f"budget {raw!r}: an error ceiling cannot be negative")
        return Budget(raw, metric.name, "ceiling", value, worst_floor)
    if metric.name == "cosine" and not -1.0 <= value <= 1.0:
        raise UsageError(f"budget {raw!r}: cosine similarity lies between -1 and 1", hint="e.g. --budget 0.99")
    if metric.name in ("accuracy", "top1") and not 0.0 <= value <= 1.0:
        raise UsageError(
            f"budget {raw!r}: {metric.name} is a fraction between 0 and 1",
            hint="a floor such as 0.98, or points below the original such as 1%",
        )
    return Budget(raw, metric.name, "floor", value, worst_floor)


def _worst(worst: str | float | None, metric: Metric) -> float | None:
    if worst is None:
        return None
    if metric.name != "cosine":
        raise UsageError(f"--worst applies to the cosine metric, not {metric.name}")
    value = _number(str(worst).strip(), "worst-case floor")
    if not -1.0 <= value <= 1.0:
        raise UsageError(f"worst-case floor {worst!r}: cosine similarity lies between -1 and 1")
    return value
