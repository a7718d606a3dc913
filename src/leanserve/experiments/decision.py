"""The decision rule: from the evidence on every metric to one action, with the figures behind it.

In order, the first that applies:

1. A sample-ratio mismatch stops the experiment (a canary rolls back): its numbers cannot be
   trusted, whatever they say.
2. Harm: once an arm has ``min_samples`` outcomes, any check whose always-valid interval lies
   wholly on the harmful side of its bound (the primary metric beyond the non-inferiority
   margin, or a guardrail) stops the experiment, or rolls a canary back. The harm tests of all
   checks form one family, Holm-adjusted, so a false alarm anywhere has probability <= alpha.
3. Not enough outcomes yet: continue.
4. A canary advances a step once the candidate has ``min_samples_per_step`` outcomes at the
   current step and every check's estimate is on its safe side; a check that looks bad but is
   not yet conclusive holds the step until the evidence goes one way or the other. After the
   last step the canary is promoted once its primary metric shows non-inferiority.
5. Split and shadow: promote a candidate whose primary interval lies wholly within the margin
   and whose every check is on its safe side (with several candidates their non-inferiority
   tests are Holm-adjusted, and the best estimate among those passing wins).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, Literal

from .config import ExperimentConfig
from .records import ExperimentState
from .statistics import Interval, SampleRatio, holm, json_number


class Action(StrEnum):
    CONTINUE = "continue"
    ADVANCE = "advance"  # canary: to the next step
    PROMOTE = "promote"  # the candidate serves everything
    ROLLBACK = "rollback"  # canary: the control serves everything, the candidate failed
    STOP = "stop"  # split or shadow: the control serves everything, the experiment ends


@dataclass(frozen=True, slots=True)
class Check:
    """One metric of one candidate against its bound, in the metric's own units.

    ``worse_above``: values above the bound are harmful (error rates, latency ratios); otherwise
    values below it are (rewards, agreement).
    """

    name: str  # error_rate, latency_p99, reward, conversion, error_rate_increase, p99_ratio, shadow_agreement
    role: Literal["primary", "guardrail"]
    arm: int
    interval: Interval  # always-valid, at the experiment's alpha
    bound: float
    worse_above: bool
    harm_p: float  # always-valid p-value of "within the bound": small when harm is shown
    safe_p: float  # always-valid p-value of "beyond the bound": small when safety is shown
    ready: bool  # the arms behind it have min_samples outcomes

    @property
    def holding(self) -> bool:
        """The estimate lies on the safe side of the bound (no evidence needed either way)."""
        e = self.interval.estimate
        if math.isnan(e):
            return True
        return e <= self.bound if self.worse_above else e >= self.bound

    def figures(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "role": self.role,
            "arm": self.arm,
            **self.interval.as_dict(),
            "bound": self.bound,
            "harmful_side": "above" if self.worse_above else "below",
            "harm_p": self.harm_p,
            "safe_p": self.safe_p,
            "holding": self.holding,
            "ready": self.ready,
        }


@dataclass(frozen=True, slots=True)
class Evidence:
    """What the rule looks at, computed from the persisted counts (see :mod:`.analysis`)."""

    checks: tuple[Check, ...]
    srm: SampleRatio | None  # None: nothing to test (a shadow sends every request to the control)
    samples: tuple[int, ...]  # outcomes per arm
    samples_at_step: int = 0  # canary: the candidate's outcomes at the current step


@dataclass(frozen=True, slots=True)
class Decision:
    action: Action
    # Which branch of the rule decided (srm, harm, collecting, step_samples, holding, advance,
    # promote, awaiting_primary, no_winner, operator): the log keeps a "continue" only when this changes.
    rule: str
    reason: str
    arm: int | None = None  # the arm promoted, or the one whose harm ended the experiment
    figures: Mapping[str, Any] = field(default_factory=dict)  # JSON-able


def decide(config: ExperimentConfig, evidence: Evidence, state: ExperimentState) -> Decision:
    """The action for a running experiment; see the module's docstring for the rule."""
    alpha = config.alpha
    harm_adjusted = holm([c.harm_p if c.ready else 1.0 for c in evidence.checks])
    figures: dict[str, Any] = {
        "samples": list(evidence.samples),
        "checks": [{**c.figures(), "harm_p_holm": p} for c, p in zip(evidence.checks, harm_adjusted, strict=True)],
    }
    if config.mode == "canary":
        figures["step"] = state.step
        figures["share_percent"] = config.steps[state.step]
        figures["samples_at_step"] = evidence.samples_at_step
    srm = evidence.srm
    if srm is not None:
        figures["srm"] = {
            "statistic": json_number(srm.statistic),
            "dof": srm.dof,
            "p_value": srm.p_value,
            "sequential_p": srm.sequential_p,
            "test": srm.test,
        }
        if srm.alarm:
            observed = ", ".join(str(o) for o in srm.observed)
            expected = ", ".join(f"{e:.0f}" for e in srm.expected)
            return Decision(
                Action.ROLLBACK if config.mode == "canary" else Action.STOP,
                "srm",
                f"sample ratio mismatch: assigned ({observed}), expected ({expected}); {srm.describe()} "
                f"< {config.srm_alpha}",
                None,
                figures,
            )

    harmful = sorted((p, i) for i, p in enumerate(harm_adjusted) if p <= alpha and evidence.checks[i].ready)
    if harmful:
        p, i = harmful[0]
        c = evidence.checks[i]
        side = "above" if c.worse_above else "below"
        return Decision(
            Action.ROLLBACK if config.mode == "canary" else Action.STOP,
            "harm",
            f"harm: {config.arms[c.arm].label} {c.name} {_fmt(c.interval)} lies wholly {side} its "
            f"bound {c.bound:g} (Holm-adjusted p = {p:.2g} <= {alpha})",
            c.arm,
            figures,
        )

    short = [(n, i) for i, n in enumerate(evidence.samples) if n < config.min_samples]
    if short:
        n, i = short[0]
        return Decision(
            Action.CONTINUE,
            "collecting",
            f"collecting: {config.arms[i].label} has {n} of the {config.min_samples} outcomes needed",
            None,
            figures,
        )

    if config.mode == "canary":
        return _canary(config, evidence, state, figures)
    return _promotion(config, evidence, figures)


def _fmt(i: Interval) -> str:
    return f"{i.estimate:.4g} [{i.lower:.4g}, {i.upper:.4g}]"


def _canary(config: ExperimentConfig, evidence: Evidence, state: ExperimentState, figures: dict[str, Any]) -> Decision:
    share = config.steps[state.step]
    if evidence.samples_at_step < config.min_samples_per_step:
        return Decision(
            Action.CONTINUE,
            "step_samples",
            f"step {state.step + 1} of {len(config.steps)} ({share:g}%): {evidence.samples_at_step} of the "
            f"{config.min_samples_per_step} candidate outcomes needed",
            None,
            figures,
        )
    waiting = [c for c in evidence.checks if not c.holding]
    if waiting:
        c = waiting[0]
        return Decision(
            Action.CONTINUE,
            "holding",
            f"holding step {state.step + 1} ({share:g}%): {c.name} {_fmt(c.interval)} is on the harmful side "
            f"of {c.bound:g} but not conclusively; waiting for the evidence",
            None,
            figures,
        )
    if state.step + 1 < len(config.steps):
        return Decision(
            Action.ADVANCE,
            "advance",
            f"advance to step {state.step + 2} of {len(config.steps)} ({config.steps[state.step + 1]:g}%): "
            f"{evidence.samples_at_step} candidate outcomes at {share:g}% with every check on its safe side",
            1,
            figures,
        )
    primary = next(c for c in evidence.checks if c.role == "primary")
    if primary.safe_p <= config.alpha:
        return Decision(
            Action.PROMOTE,
            "promote",
            f"promote {config.arms[1].label}: every step passed, and {primary.name} {_fmt(primary.interval)} "
            f"lies within the bound {primary.bound:g} (p = {primary.safe_p:.2g})",
            1,
            figures,
        )
    return Decision(
        Action.CONTINUE,
        "awaiting_primary",
        f"last step passed; waiting for {primary.name} {_fmt(primary.interval)} to lie within {primary.bound:g}",
        None,
        figures,
    )


def _promotion(config: ExperimentConfig, evidence: Evidence, figures: dict[str, Any]) -> Decision:
    primaries = [c for c in evidence.checks if c.role == "primary"]
    adjusted = holm([c.safe_p for c in primaries])
    passing = [
        (c, p)
        for c, p in zip(primaries, adjusted, strict=True)
        if p <= config.alpha and all(g.holding for g in evidence.checks if g.arm == c.arm)
    ]
    if not passing:
        best = min(primaries, key=lambda c: c.safe_p)
        return Decision(
            Action.CONTINUE,
            "no_winner",
            f"no candidate shown non-inferior yet: {config.arms[best.arm].label} {best.name} "
            f"{_fmt(best.interval)} against the bound {best.bound:g}",
            None,
            figures,
        )
    # The best estimate among the candidates that passed: lowest when lower is better.
    sign = 1.0 if passing[0][0].worse_above else -1.0
    winner, p = min(passing, key=lambda cp: sign * cp[0].interval.estimate)
    return Decision(
        Action.PROMOTE,
        "promote",
        f"promote {config.arms[winner.arm].label}: {winner.name} {_fmt(winner.interval)} lies within the bound "
        f"{winner.bound:g} (p = {p:.2g}) and every guardrail holds",
        winner.arm,
        figures,
    )
