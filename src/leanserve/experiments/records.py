"""What an experiment keeps: additive counters, latency buckets, feedback totals and its phase.

Everything that grows per request is a sum, so a batch of writes, the persisted totals and a
merge of several replicas' writes are the same shape (a :class:`Tally`) and add up.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Final, Literal, get_args

# Counter kinds, each counted per (arm, step); step is the canary step index (0 otherwise).
ASSIGNED: Final = "assigned"  # choose_arm picked the arm: the sample-ratio test counts these
REQUESTS: Final = "requests"  # outcomes recorded
ERRORS: Final = "errors"  # of those, failed
MIRRORED: Final = "mirrored"  # shadow copies sent to the candidate
SHED: Final = "shed"  # shadow copies dropped because the candidate or the server was busy
COMPARED: Final = "compared"  # shadow answers compared with the control's
AGREED: Final = "agreed"  # of those, agreeing
SIMILARITY: Final = "similarity"  # sum of cosine similarities over compared answers
ORPHAN_FEEDBACK: Final = "orphan_feedback"  # feedback for a key never recorded (or expired)
# Feedback totals of responses past the feedback window, folded out of the per-response rows.
EXPOSED: Final = "exposed"
REWARDED: Final = "rewarded"
REWARD_SUM: Final = "reward_sum"
REWARD_SUM_SQ: Final = "reward_sum_sq"
CONVERTED: Final = "converted"

Phase = Literal["running", "promoted", "rolled_back", "stopped"]
PHASES: tuple[str, ...] = get_args(Phase)

CounterKey = tuple[str, int, int]  # (kind, arm, step)


@dataclass(slots=True)
class Tally:
    """Additive counts: a pending batch of writes, or totals read back."""

    counters: dict[CounterKey, float] = field(default_factory=dict)
    latency: dict[tuple[int, int], int] = field(default_factory=dict)  # (arm, bucket) -> observations

    def add(self, kind: str, arm: int, step: int, value: float = 1.0) -> None:
        key = (kind, arm, step)
        self.counters[key] = self.counters.get(key, 0.0) + value

    def observe(self, arm: int, bucket: int) -> None:
        key = (arm, bucket)
        self.latency[key] = self.latency.get(key, 0) + 1

    def merge(self, other: Tally) -> None:
        for key, value in other.counters.items():
            self.counters[key] = self.counters.get(key, 0.0) + value
        for lkey, count in other.latency.items():
            self.latency[lkey] = self.latency.get(lkey, 0) + count

    def __len__(self) -> int:
        return len(self.counters) + len(self.latency)

    def count(self, kind: str, arm: int, step: int | None = None) -> float:
        """A counter for one arm, at one step or summed over all."""
        if step is not None:
            return self.counters.get((kind, arm, step), 0.0)
        return sum(v for (k, a, _), v in self.counters.items() if k == kind and a == arm)

    def buckets(self, arm: int) -> dict[int, int]:
        return {b: c for (a, b), c in self.latency.items() if a == arm}


@dataclass(frozen=True, slots=True)
class FeedbackTotals:
    """One arm's responses that can receive feedback, and what they received."""

    exposed: int = 0  # responses (or units) recorded with a key
    rewarded: int = 0  # of those, with any feedback
    total: float = 0.0  # sum of rewards
    total_sq: float = 0.0
    converted: int = 0  # with a positive total reward

    def __add__(self, other: FeedbackTotals) -> FeedbackTotals:
        return FeedbackTotals(
            self.exposed + other.exposed,
            self.rewarded + other.rewarded,
            self.total + other.total,
            self.total_sq + other.total_sq,
            self.converted + other.converted,
        )


@dataclass(frozen=True, slots=True)
class ExperimentState:
    """Where an experiment stands: what the assignment follows."""

    phase: Phase = "running"
    step: int = 0  # canary: the index into steps
    winner: int | None = None  # promoted: the arm that serves everything
    # The arms' labels when the experiment began: its counts are by arm index, so a changed
    # list of arms under the same name would mix two experiments' numbers.
    arms: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class Snapshot:
    """Everything persisted about one experiment, read at one moment."""

    tally: Tally
    feedback: Mapping[int, FeedbackTotals]
    state: ExperimentState
    decisions: tuple[LoggedDecision, ...]  # the most recent last


@dataclass(frozen=True, slots=True)
class LoggedDecision:
    at: float  # Unix time
    action: str
    rule: str
    reason: str
    arm: int | None
    figures: Mapping[str, object]
