"""The decision rule, branch by branch, on hand-made evidence."""

from __future__ import annotations

import json
from dataclasses import replace

import pytest

from leanserve.experiments.config import Arm, ExperimentConfig
from leanserve.experiments.decision import Action, Check, Evidence, decide
from leanserve.experiments.records import ExperimentState
from leanserve.experiments.statistics import Interval, SampleRatio

ARMS = (Arm("m", 1), Arm("m", 2))
CANARY = ExperimentConfig("c", "canary", ARMS, steps=(1.0, 50.0, 100.0), min_samples_per_step=500, min_samples=100)
SPLIT = ExperimentConfig("s", "split", ARMS, min_samples=100, primary_metric="conversion", non_inferiority_margin=0.01)
FAIR = SampleRatio(0.2, 1, 0.65, 1.0, "chi_square", False, (1000, 1000), (1000.0, 1000.0))
SKEWED = SampleRatio(16.0, 1, 6.3e-5, 0.01, "chi_square", True, (5200, 4800), (5000.0, 5000.0))


def check(
    name: str = "error_rate",
    role: str = "primary",
    estimate: float = 0.0,
    bound: float = 0.0,
    harm_p: float = 1.0,
    safe_p: float = 1.0,
    arm: int = 1,
    worse_above: bool = True,
    ready: bool = True,
) -> Check:
    interval = Interval(estimate, estimate - 0.01, estimate + 0.01)
    kind = "primary" if role == "primary" else "guardrail"
    return Check(name, kind, arm, interval, bound, worse_above, harm_p, safe_p, ready)


def evidence(
    *checks: Check, srm: SampleRatio | None = FAIR, samples: tuple[int, ...] = (5000, 5000), at_step: int = 600
) -> Evidence:
    return Evidence(checks, srm, samples, at_step)


def test_a_sample_ratio_mismatch_stops_a_split_and_rolls_back_a_canary() -> None:
    ev = evidence(check(), srm=SKEWED)
    d = decide(SPLIT, ev, ExperimentState())
    assert (d.action, d.rule) == (Action.STOP, "srm") and "5200, 4800" in d.reason and "p = 6.3e-05" in d.reason
    assert decide(CANARY, ev, ExperimentState()).action is Action.ROLLBACK


def test_harm_ends_the_experiment_as_soon_as_the_interval_shows_it() -> None:
    slow = check("p99_ratio", "guardrail", estimate=2.0, bound=1.25, harm_p=1e-4)
    d = decide(CANARY, evidence(check(), slow), ExperimentState())
    assert (d.action, d.rule, d.arm) == (Action.ROLLBACK, "harm", 1)
    assert "m:2 p99_ratio" in d.reason and "above its bound 1.25" in d.reason
    assert decide(SPLIT, evidence(check(), slow), ExperimentState()).action is Action.STOP
    # Even before min_samples_per_step: harm does not wait for the step to fill.
    assert decide(CANARY, evidence(check(), slow, at_step=3), ExperimentState()).action is Action.ROLLBACK


def test_harm_tests_are_holm_adjusted_as_one_family() -> None:
    two_weak = evidence(
        check("error_rate_increase", "guardrail", estimate=0.03, bound=0.01, harm_p=0.03),
        check("p99_ratio", "guardrail", estimate=1.4, bound=1.25, harm_p=0.03),
    )
    d = decide(CANARY, two_weak, ExperimentState())
    assert d.action is Action.CONTINUE  # 0.03 * 2 > 0.05: neither survives the adjustment
    assert [c["harm_p_holm"] for c in d.figures["checks"]] == pytest.approx([0.06, 0.06])
    one_strong = evidence(
        check("error_rate_increase", "guardrail", estimate=0.03, bound=0.01, harm_p=0.02),
        check("p99_ratio", "guardrail", estimate=1.0, bound=1.25),
    )
    assert decide(CANARY, one_strong, ExperimentState()).action is Action.ROLLBACK  # 0.02 * 2 <= 0.05


def test_checks_that_are_not_ready_decide_nothing() -> None:
    early = check("p99_ratio", "guardrail", estimate=3.0, bound=1.25, harm_p=1e-9, ready=False)
    d = decide(CANARY, evidence(check(), early, samples=(5000, 40)), ExperimentState())
    assert (d.action, d.rule) == (Action.CONTINUE, "collecting") and "m:2 has 40 of the 100" in d.reason


def test_a_canary_waits_for_its_step_then_for_doubtful_checks_then_advances() -> None:
    state = ExperimentState(step=0)
    d = decide(CANARY, evidence(check(), at_step=499), state)
    assert (d.action, d.rule) == (Action.CONTINUE, "step_samples") and "499 of the 500" in d.reason
    doubtful = check("p99_ratio", "guardrail", estimate=1.3, bound=1.25, harm_p=0.2)
    d = decide(CANARY, evidence(check(), doubtful), state)
    assert (d.action, d.rule) == (Action.CONTINUE, "holding") and "p99_ratio" in d.reason
    d = decide(CANARY, evidence(check(), check("p99_ratio", "guardrail", estimate=1.1, bound=1.25)), state)
    assert (d.action, d.rule, d.arm) == (Action.ADVANCE, "advance", 1) and "step 2 of 3 (50%)" in d.reason
    assert d.figures["share_percent"] == 1.0 and d.figures["samples_at_step"] == 600


def test_after_its_last_step_a_canary_is_promoted_once_the_primary_shows_non_inferiority() -> None:
    last = ExperimentState(step=2)
    d = decide(CANARY, evidence(check(estimate=-0.001, safe_p=0.2)), last)
    assert (d.action, d.rule) == (Action.CONTINUE, "awaiting_primary")
    d = decide(CANARY, evidence(check(estimate=-0.001, safe_p=0.01)), last)
    assert (d.action, d.rule, d.arm) == (Action.PROMOTE, "promote", 1)


def test_a_split_promotes_a_non_inferior_candidate_whose_guardrails_hold() -> None:
    conv = check("conversion", estimate=0.004, bound=-0.01, worse_above=False, safe_p=0.001)
    ok_latency = check("p99_ratio", "guardrail", estimate=1.1, bound=1.25)
    d = decide(SPLIT, evidence(conv, ok_latency), ExperimentState())
    assert (d.action, d.arm) == (Action.PROMOTE, 1) and "every guardrail holds" in d.reason
    slowish = check("p99_ratio", "guardrail", estimate=1.3, bound=1.25, harm_p=0.3)
    assert decide(SPLIT, evidence(conv, slowish), ExperimentState()).rule == "no_winner"


def test_with_several_candidates_the_best_passing_estimate_wins() -> None:
    three = replace(SPLIT, arms=(*ARMS, Arm("m", 3)))
    a = check("conversion", estimate=0.004, bound=-0.01, worse_above=False, safe_p=0.001, arm=1)
    b = check("conversion", estimate=0.009, bound=-0.01, worse_above=False, safe_p=0.002, arm=2)
    d = decide(three, evidence(a, b, samples=(5000, 5000, 5000)), ExperimentState())
    assert (d.action, d.arm) == (Action.PROMOTE, 2)  # more conversions is better
    # Holm over the candidates: 0.03 and 0.04 adjust to 0.06 and 0.06, and neither passes.
    a2, b2 = replace(a, safe_p=0.03), replace(b, safe_p=0.04)
    assert decide(three, evidence(a2, b2, samples=(5000, 5000, 5000)), ExperimentState()).action is Action.CONTINUE


def test_the_figures_are_json() -> None:
    odd = Check("p99_ratio", "guardrail", 1, Interval(float("nan"), 0.0, float("inf")), 1.25, True, 1.0, 1.0, True)
    d = decide(CANARY, evidence(check(), odd, srm=replace(FAIR, statistic=float("inf"))), ExperimentState())
    text = json.dumps(d.figures, allow_nan=False)
    assert '"upper": "inf"' in text and '"estimate": null' in text
