"""From persisted counts to evidence: each candidate's checks against the control, and the split test.

Pure: a :class:`~.records.Snapshot` in, an :class:`~.decision.Evidence` out. Comparisons pool
each arm's outcomes over a canary's steps; the counts are kept per step, so a stratified
estimate stays possible, but for guardrails whose bounds are coarse (an error rate one point
higher, a p99 a quarter slower) the pooled comparison is what operators read.
"""

from __future__ import annotations

from typing import Literal

from .config import ExperimentConfig
from .decision import Check, Evidence
from .quantiles import LatencyHistogram, ratio_interval, ratio_p_value
from .records import AGREED, ASSIGNED, COMPARED, ERRORS, REQUESTS, FeedbackTotals, Snapshot, Tally
from .statistics import (
    Difference,
    Moments,
    NormalMixture,
    SampleRatio,
    proportion_interval,
    proportion_p_value,
    sample_ratio_test,
)


def outcomes(tally: Tally, arm: int) -> Moments:
    """An arm's error indicator: errors out of outcomes."""
    return Moments.of_counts(int(tally.count(ERRORS, arm)), int(tally.count(REQUESTS, arm)))


def feedback_moments(config: ExperimentConfig, totals: FeedbackTotals) -> Moments:
    """The primary feedback metric of one arm: rewards over responses that got one, or
    conversions over every response that could have converted."""
    if config.primary_metric == "conversion":
        return Moments.of_counts(totals.converted, totals.exposed)
    return Moments(totals.rewarded, totals.total, totals.total_sq)


def histogram(tally: Tally, arm: int) -> LatencyHistogram:
    return LatencyHistogram.of(tally.buckets(arm))


def _difference_check(
    name: str,
    role: Literal["primary", "guardrail"],
    arm: int,
    diff: Difference,
    bound: float,
    worse_above: bool,
    alpha: float,
    ready: bool,
) -> Check:
    if worse_above:
        harm_p, safe_p = diff.p_value_above(bound), diff.p_value_below(bound)
    else:
        harm_p, safe_p = diff.p_value_below(bound), diff.p_value_above(bound)
    return Check(name, role, arm, diff.interval(alpha), bound, worse_above, harm_p, safe_p, ready)


def _ratio_check(
    name: str,
    role: Literal["primary", "guardrail"],
    arm: int,
    control: LatencyHistogram,
    candidate: LatencyHistogram,
    bound: float,
    mixture: NormalMixture,
    alpha: float,
    ready: bool,
) -> Check:
    c = mixture.concentration
    interval = ratio_interval(control, candidate, 0.99, alpha, c)
    # The p-values cost a bisection each; before the arms are ready they decide nothing.
    harm_p = ratio_p_value(control, candidate, 0.99, bound, c, above=True) if ready else 1.0
    safe_p = ratio_p_value(control, candidate, 0.99, bound, c, above=False) if ready else 1.0
    return Check(name, role, arm, interval, bound, True, harm_p, safe_p, ready)


def checks(config: ExperimentConfig, snapshot: Snapshot, mixture: NormalMixture) -> list[Check]:
    """The primary metric and every configured guardrail, for each candidate against the control."""
    tally = snapshot.tally
    alpha = config.alpha
    enough = config.min_samples
    control_outcomes = outcomes(tally, 0)
    control_latency = histogram(tally, 0)
    margin = config.non_inferiority_margin
    result: list[Check] = []
    for arm in range(1, len(config.arms)):
        cand_outcomes = outcomes(tally, arm)
        cand_latency = histogram(tally, arm)
        ready = min(control_outcomes.n, cand_outcomes.n) >= enough
        errors = Difference.of(control_outcomes, cand_outcomes, mixture)
        metric = config.primary_metric
        if metric == "error_rate":
            result.append(_difference_check(metric, "primary", arm, errors, margin, True, alpha, ready))
        elif metric == "latency_p99":
            result.append(
                _ratio_check(metric, "primary", arm, control_latency, cand_latency, 1.0 + margin, mixture, alpha, ready)
            )
        else:
            a = feedback_moments(config, snapshot.feedback.get(0, FeedbackTotals()))
            b = feedback_moments(config, snapshot.feedback.get(arm, FeedbackTotals()))
            diff = Difference.of(a, b, mixture)
            fed = min(a.n, b.n) >= enough
            result.append(_difference_check(metric, "primary", arm, diff, -margin, False, alpha, fed))
        if config.max_error_rate_increase is not None:
            result.append(
                _difference_check(
                    "error_rate_increase", "guardrail", arm, errors, config.max_error_rate_increase, True, alpha, ready
                )
            )
        if config.max_p99_ratio is not None:
            result.append(
                _ratio_check(
                    "p99_ratio",
                    "guardrail",
                    arm,
                    control_latency,
                    cand_latency,
                    config.max_p99_ratio,
                    mixture,
                    alpha,
                    ready,
                )
            )
        if config.mode == "shadow" and config.min_shadow_agreement is not None:
            result.append(_agreement_check(tally, arm, config.min_shadow_agreement, mixture, alpha, enough))
    return result


def _agreement_check(tally: Tally, arm: int, bound: float, mixture: NormalMixture, alpha: float, enough: int) -> Check:
    compared = int(tally.count(COMPARED, arm))
    agreed = int(tally.count(AGREED, arm))
    c = mixture.concentration
    interval = proportion_interval(agreed, compared, alpha, c)
    rate = interval.estimate
    p = proportion_p_value(agreed, compared, bound, c) if bound < 1 else 1.0
    harm_p = p if compared and rate < bound else 1.0
    safe_p = p if compared and rate > bound else 1.0
    return Check("shadow_agreement", "guardrail", arm, interval, bound, False, harm_p, safe_p, compared >= enough)


def sample_ratio(config: ExperimentConfig, snapshot: Snapshot, mixture: NormalMixture) -> SampleRatio | None:
    """Assignments against the configured shares: one stratum per canary step visited."""
    if config.mode == "shadow":
        return None  # every request goes to the control: there is no split to test
    tally = snapshot.tally
    arms = range(len(config.arms))
    if config.mode == "split":
        total = sum(a.weight for a in config.arms)
        observed = [[int(tally.count(ASSIGNED, i)) for i in arms]]
        shares = [[a.weight / total for a in config.arms]]
    else:
        steps = range(snapshot.state.step + 1)
        observed = [[int(tally.count(ASSIGNED, i, s)) for i in arms] for s in steps]
        shares = [[1 - config.steps[s] / 100, config.steps[s] / 100] for s in steps]
    return sample_ratio_test(observed, shares, config.srm_alpha, config.srm_test, mixture.concentration)


def evidence(config: ExperimentConfig, snapshot: Snapshot, mixture: NormalMixture) -> Evidence:
    tally = snapshot.tally
    samples = tuple(int(tally.count(REQUESTS, i)) for i in range(len(config.arms)))
    at_step = int(tally.count(REQUESTS, 1, snapshot.state.step)) if config.mode == "canary" else 0
    return Evidence(tuple(checks(config, snapshot, mixture)), sample_ratio(config, snapshot, mixture), samples, at_step)
