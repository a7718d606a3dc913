from __future__ import annotations

import pytest

from leanserve.errors import UsageError
from leanserve.optimization.budget import parse_budget
from leanserve.optimization.metrics import Score, make_metric

ACC = make_metric("accuracy", "y", True)
COS = make_metric("cosine", "y", False)
MAE = make_metric("mae", "y", False)


def test_percent_with_accuracy_is_points_below_the_original() -> None:
    b = parse_budget("1%", ACC)
    original = Score(0.95)
    assert b.limit(original) == pytest.approx(0.94)
    assert b.check(Score(0.9401), original).accepted
    assert not b.check(Score(0.9399), original).accepted


def test_plain_number_with_cosine_is_a_floor_and_worst_adds_one() -> None:
    b = parse_budget("0.99", COS, worst="0.97")
    original = Score(1.0, 1.0)
    assert b.check(Score(0.995, 0.98), original).accepted
    assert not b.check(Score(0.989, 0.98), original).accepted
    verdict = b.check(Score(0.995, 0.96), original)
    assert not verdict.accepted and "worst" in verdict.reason
    assert parse_budget("1%", COS).limit(original) == pytest.approx(0.99)


def test_error_metrics_take_a_ceiling() -> None:
    b = parse_budget("1e-3", MAE)
    assert b.check(Score(5e-4), Score(0.0)).accepted
    assert not b.check(Score(2e-3), Score(0.0)).accepted


def test_zero_budget_accepts_an_identical_variant() -> None:
    assert parse_budget("0%", ACC).check(Score(0.9), Score(0.9)).accepted


def test_defaults() -> None:
    assert parse_budget(None, ACC).text == "1%"
    assert parse_budget(None, COS).amount == pytest.approx(0.99)
    with pytest.raises(UsageError, match="explicit budget"):
        parse_budget(None, MAE)


@pytest.mark.parametrize(
    ("text", "metric", "match"),
    [
        ("abc", ACC, "does not parse"),
        ("1%%", ACC, "does not parse"),
        ("", ACC, "empty"),
        ("150%", ACC, "between 0% and 100%"),
        ("-1%", ACC, "between 0% and 100%"),
        ("1.5", ACC, "fraction between 0 and 1"),
        ("1.5", COS, "between -1 and 1"),
        ("1%", MAE, "no meaning"),
        ("-0.1", MAE, "cannot be negative"),
        ("nan", COS, "not a finite number"),
    ],
)
def test_budgets_that_do_not_parse_are_clear_errors(text: str, metric: object, match: str) -> None:
    with pytest.raises(UsageError, match=match):
        parse_budget(text, metric)  # type: ignore[arg-type]


def test_worst_only_for_cosine() -> None:
    with pytest.raises(UsageError, match="cosine"):
        parse_budget("1%", ACC, worst="0.9")
