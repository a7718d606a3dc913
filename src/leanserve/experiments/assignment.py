"""Which arm answers a request: pure policy, no I/O, no clocks.

A unit (a user, a session) is hashed with the experiment's salt to a point in [0, 1) that never
changes, and the point falls into one arm's slice of [0, 1). The same unit therefore gets the
same arm in every process and after every restart, and changing the salt reshuffles everyone.
Without a unit each request draws its point from an injectable random source.

Slices are laid out so that a canary only ever moves units one way: the candidate owns
``[0, share)``, so raising the share from 5% to 25% keeps every unit that already saw the
candidate on it and moves some control units over, never back.
"""

from __future__ import annotations

import hashlib
import random
from bisect import bisect_right
from collections.abc import Sequence
from dataclasses import dataclass, field
from enum import Enum
from itertools import accumulate

_TWO_TO_64 = float(2**64)


def unit_point(salt: str, unit: str) -> float:
    """The unit's fixed point in [0, 1): the first 64 bits of blake2b(salt, unit), scaled.

    Not Python's ``hash()``, which is salted per process. The salt's length prefixes it, so
    ("ab", "c") and ("a", "bc") differ.
    """
    digest = hashlib.blake2b(f"{len(salt)}:{salt}:{unit}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") / _TWO_TO_64


@dataclass(frozen=True, slots=True)
class Split:
    """Arms' slices of [0, 1), laid out in ``order``: slice i is ``[uppers[i-1], uppers[i])``."""

    order: tuple[int, ...]  # the arm owning each slice, in layout order
    uppers: tuple[float, ...]  # each slice's upper end, cumulative; the last exactly 1.0
    # ``order`` and its last arm once more: ``slots[bisect_right(uppers, point)]`` is the arm of any
    # point in [0, 1], 1.0 included (a unit's hash can round up to it), with no bounds check.
    slots: tuple[int, ...] = field(init=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "slots", (*self.order, self.order[-1]))

    @classmethod
    def from_weights(cls, weights: Sequence[float], order: Sequence[int] | None = None) -> Split:
        """Slices proportional to ``weights`` (one per arm), laid out in ``order`` (default: arm order)."""
        if not weights or any(w < 0 for w in weights) or sum(weights) <= 0:
            raise ValueError(f"weights must be non-negative with a positive sum, got {list(weights)}")
        layout = tuple(order) if order is not None else tuple(range(len(weights)))
        if sorted(layout) != list(range(len(weights))):
            raise ValueError(f"order must list each of the {len(weights)} arms once, got {list(layout)}")
        total = float(sum(weights))
        uppers = [c / total for c in accumulate(weights[i] for i in layout)]
        uppers[-1] = 1.0  # no point may fall past the last slice through rounding
        return cls(layout, tuple(uppers))

    @property
    def arms(self) -> int:
        return len(self.order)

    def share(self, arm: int) -> float:
        """The fraction of points that fall to ``arm``."""
        i = self.order.index(arm)
        return self.uppers[i] - (self.uppers[i - 1] if i else 0.0)

    def arm_at(self, point: float) -> int:
        # bisect_right: a point on a boundary belongs to the slice that starts there, so an arm
        # of weight 0 (an empty slice) is never chosen.
        return self.slots[bisect_right(self.uppers, point)]


def canary_split(share_percent: float) -> Split:
    """Control (arm 0) and candidate (arm 1) at a canary step.

    The candidate's slice is laid out first, ``[0, share)``, so that raising the share never
    moves a unit back from the candidate to the control.
    """
    share = share_percent / 100.0
    if not 0 <= share <= 1:
        raise ValueError(f"a canary share is a percentage in [0, 100], got {share_percent}")
    return Split.from_weights([1.0 - share, share], order=[1, 0])


def only(arm: int, arms: int) -> Split:
    """Every request to one arm: after a promotion, a rollback or a stop."""
    return Split.from_weights([1.0 if i == arm else 0.0 for i in range(arms)])


def choose(split: Split, salt: str, unit: str | None, rng: random.Random) -> int:
    """The arm of one request: sticky by unit when there is one, random otherwise."""
    point = unit_point(salt, unit) if unit is not None else rng.random()
    return split.arm_at(point)


class Mirror(Enum):
    """What happens to a shadow copy of a request."""

    SEND = "send"
    SAMPLED_OUT = "sampled_out"  # outside the configured fraction of traffic that is copied
    SHED = "shed"  # the candidate is busy: the copy is dropped so the control never waits


def mirror(point: float, sample: float, candidate_in_flight: int, max_in_flight: int) -> Mirror:
    """Whether to copy a request to the shadow candidate.

    Copies are the first thing shed under load: the control's answer is what the user waits
    for, and the candidate's queue must never grow into the shared CPU or memory. ``point`` is
    the request's point in [0, 1) (sticky units keep or skip their copies consistently).
    """
    if point >= sample:
        return Mirror.SAMPLED_OUT
    if candidate_in_flight >= max_in_flight:
        return Mirror.SHED
    return Mirror.SEND
