"""Which queued requests of different lengths share a padded engine run: pure policy.

A ragged batch costs about one run's fixed overhead plus a price per padded token (rows times
the longest member). Measured with all-MiniLM-L6-v2 on the 2-core reference machine, the fixed part is
7 to 15 tokens' worth (loaded: 1.6-2.0 ms against 0.25 ms per padded token, at 16 to 64 tokens and
1 to 8 rows; quiet, as the server learned it: about 15): running a short group alone wastes
little, but padding a 12-token sentence to 40 wastes more than a run. Power-of-two length groups,
the rule before this module, padded 15% of a batch's tokens and split a standing queue by a rule
blind to either cost; choosing the runs by that cost merges neighbouring groups exactly when
merging is cheaper than a run of their own, and splits a group when padding is dearer.

:func:`plan_runs` splits the queued requests, sorted by length, into the runs of least total cost
(a shortest path over the sorted order: optimal runs are contiguous in length); the engine runs
the one that holds the oldest request, so nobody waits behind newer requests. A queue of one is a
run of one: an idle model's request never waits. :class:`RunCost` learns the fixed part of a run,
in padded tokens, from the model's own runs.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Final

# A run's fixed cost, in padded tokens, before the model's own runs tell: the loaded reference
# measurement above (MiniLM, 6.1-7.9 tokens' worth).
DEFAULT_OVERHEAD_TOKENS: Final = 8.0
# Bounds on what the fit may claim: a noisy fit must neither pad everything to the longest
# request in the queue nor run every request alone.
MIN_OVERHEAD_TOKENS: Final = 1.0
MAX_OVERHEAD_TOKENS: Final = 64.0


@dataclass(frozen=True, slots=True)
class Queued:
    """What the policy reads of a queued request: its padded length and its rows."""

    length: int
    rows: int = 1


def plan_runs(queued: Sequence[Queued], max_rows: int, overhead: float) -> list[list[int]]:
    """The runs (indices into ``queued``) of least total cost: ``overhead`` per run plus rows x longest.

    Each run holds at most ``max_rows`` rows (a request over it runs alone). Runs are listed from
    the shortest requests to the longest; within a run, indices keep the queue's order.
    """
    n = len(queued)
    if n <= 1:
        return [list(range(n))]
    order = sorted(range(n), key=lambda i: queued[i].length)  # stable: equal lengths keep queue order
    lengths = [queued[i].length for i in order]
    rows = [queued[i].rows for i in order]
    # best[j]: least cost of running the j shortest requests; start[j]: where the last run begins.
    best = [0.0] * (n + 1)
    start = [0] * (n + 1)
    for j in range(1, n + 1):
        longest = lengths[j - 1]
        taken = 0
        cost = float("inf")
        first = j - 1
        for i in range(j - 1, -1, -1):
            taken += rows[i]
            if taken > max_rows and i < j - 1:
                break
            c = best[i] + overhead + taken * longest
            if c < cost:
                cost, first = c, i
        best[j] = cost
        start[j] = first
    runs: list[list[int]] = []
    j = n
    while j > 0:
        i = start[j]
        runs.append(sorted(order[i:j]))
        j = i
    runs.reverse()
    return runs


def run_with_oldest(queued: Sequence[Queued], max_rows: int, overhead: float) -> list[int]:
    """The indices of the planned run that holds ``queued[0]`` (the oldest request), in queue order."""
    for run in plan_runs(queued, max_rows, overhead):
        if run and run[0] == 0:
            return run
    return [0]


class RunCost:
    """A model's run cost as ``fixed + per_token * padded tokens``, fitted over its recent runs.

    An exponentially weighted least-squares line (recent runs weigh most, as the machine's load
    drifts). :attr:`overhead_tokens` is the fixed part in padded tokens, what :func:`plan_runs` needs;
    until the runs spread over enough sizes to fit a line it is :data:`DEFAULT_OVERHEAD_TOKENS`.
    """

    # A run's weight halves after about 140 runs (a few seconds of a busy model): with a shorter
    # memory, on the shared 2-core machine the fit swung between 2 and 30 tokens within seconds.
    DECAY = 0.995
    MIN_RUNS = 16

    def __init__(self) -> None:
        self._w = self._x = self._y = self._xx = self._xy = 0.0
        self._runs = 0
        self.overhead_tokens = DEFAULT_OVERHEAD_TOKENS

    def observe(self, padded_tokens: int, seconds: float) -> None:
        if padded_tokens <= 0 or seconds <= 0:
            return
        d = self.DECAY
        x = float(padded_tokens)
        self._w = d * self._w + 1.0
        self._x = d * self._x + x
        self._y = d * self._y + seconds
        self._xx = d * self._xx + x * x
        self._xy = d * self._xy + x * seconds
        self._runs += 1
        if self._runs >= self.MIN_RUNS:
            self.overhead_tokens = self._fit()

    def _fit(self) -> float:
        mean_x, mean_y = self._x / self._w, self._y / self._w
        var = self._xx / self._w - mean_x * mean_x
        if var <= (0.1 * mean_x) ** 2:  # the runs' sizes hardly differ: no line to fit
            return self.overhead_tokens
        per_token = (self._xy / self._w - mean_x * mean_y) / var
        if per_token <= 0:
            # Runs cost the same whatever their tokens, as far as the noise lets one see (a small
            # model, where Python's share of a run dwarfs the engine's): padding is all but free.
            return MAX_OVERHEAD_TOKENS
        fixed = mean_y - per_token * mean_x
        return min(MAX_OVERHEAD_TOKENS, max(MIN_OVERHEAD_TOKENS, fixed / per_token))


__all__ = [
    "DEFAULT_OVERHEAD_TOKENS",
    "MAX_OVERHEAD_TOKENS",
    "MIN_OVERHEAD_TOKENS",
    "Queued",
    "RunCost",
    "plan_runs",
    "run_with_oldest",
]
