"""Which queued requests of different lengths share a run: the policy alone, without an engine."""

from __future__ import annotations

import random

import pytest

from leanserve.processing.grouping import (
    DEFAULT_OVERHEAD_TOKENS,
    MAX_OVERHEAD_TOKENS,
    Queued,
    RunCost,
    plan_runs,
    run_with_oldest,
)


def _cost(queued: list[Queued], runs: list[list[int]], overhead: float) -> float:
    return sum(overhead + sum(queued[i].rows for i in run) * max(queued[i].length for i in run) for run in runs)


def _brute_force(queued: list[Queued], max_rows: int, overhead: float) -> float:
    """The least cost over every way to cut the length-sorted queue into runs (2^(n-1) of them)."""
    order = sorted(range(len(queued)), key=lambda i: queued[i].length)
    best = float("inf")
    for cuts in range(1 << (len(order) - 1)):
        runs, run = [], [order[0]]
        for k in range(1, len(order)):
            if cuts >> (k - 1) & 1:
                runs.append(run)
                run = []
            run.append(order[k])
        runs.append(run)
        if all(sum(queued[i].rows for i in r) <= max_rows for r in runs):
            best = min(best, _cost(queued, runs, overhead))
    return best


def test_a_queue_of_one_is_a_run_of_one() -> None:
    assert plan_runs([Queued(40)], 32, 8.0) == [[0]]
    assert run_with_oldest([Queued(40)], 32, 8.0) == [0]
    assert plan_runs([], 32, 8.0) == [[]]


def test_equal_lengths_share_one_run_up_to_the_row_limit() -> None:
    queued = [Queued(20)] * 40
    runs = plan_runs(queued, 32, 8.0)
    assert sorted(len(r) for r in runs) == [8, 32]
    assert sorted(i for r in runs for i in r) == list(range(40))


def test_a_short_group_merges_with_its_neighbour_when_padding_costs_less_than_a_run() -> None:
    # Two sentences of 15 tokens beside ten of 16: padding them costs 2 tokens, a run of their own 8.
    queued = [Queued(15), Queued(15)] + [Queued(16)] * 10
    assert plan_runs(queued, 32, 8.0) == [list(range(12))]
    # Power-of-two groups split at 16/17; the cost rule merges across them when the padding is cheaper:
    # five 16s padded to 17 cost 5 tokens, but ten cost 10, over a run's 8.
    assert plan_runs([Queued(17)] + [Queued(16)] * 5, 32, 8.0) == [list(range(6))]
    assert plan_runs([Queued(17)] + [Queued(16)] * 10, 32, 8.0) == [list(range(1, 11)), [0]]


def test_a_short_sentence_is_not_padded_to_a_long_one() -> None:
    # Padding two 10-token sentences to 100 wastes 180 tokens: far more than a second run.
    queued = [Queued(10), Queued(100), Queued(10), Queued(100)]
    assert plan_runs(queued, 32, 8.0) == [[0, 2], [1, 3]]
    assert run_with_oldest(queued, 32, 8.0) == [0, 2]
    assert run_with_oldest(queued[1:], 32, 8.0) == [0, 2]


def test_a_larger_run_overhead_merges_more() -> None:
    queued = [Queued(10), Queued(14), Queued(20), Queued(28)]
    assert len(plan_runs(queued, 32, 1.0)) == 4
    assert plan_runs(queued, 32, 200.0) == [[0, 1, 2, 3]]


def test_a_request_over_the_row_limit_runs_alone() -> None:
    queued = [Queued(20, rows=40), Queued(20), Queued(20)]
    assert plan_runs(queued, 32, 8.0) == [[1, 2], [0]] or plan_runs(queued, 32, 8.0) == [[0], [1, 2]]
    assert run_with_oldest(queued, 32, 8.0) == [0]


@pytest.mark.parametrize("seed", range(30))
def test_the_plan_is_the_cheapest_and_covers_every_request_once(seed: int) -> None:
    rnd = random.Random(seed)
    queued = [Queued(rnd.randint(1, 60), rnd.choice([1, 1, 1, 2, 3])) for _ in range(rnd.randint(2, 10))]
    max_rows, overhead = rnd.choice([4, 8, 32]), rnd.choice([1.0, 8.0, 30.0])
    runs = plan_runs(queued, max_rows, overhead)
    assert sorted(i for r in runs for i in r) == list(range(len(queued)))
    assert all(sum(queued[i].rows for i in r) <= max_rows for r in runs)
    assert all(r == sorted(r) for r in runs)  # queue order within a run
    assert _cost(queued, runs, overhead) == pytest.approx(_brute_force(queued, max_rows, overhead))
    assert 0 in run_with_oldest(queued, max_rows, overhead)


def test_run_cost_learns_the_fixed_part_of_a_run_in_tokens() -> None:
    cost = RunCost()
    assert cost.overhead_tokens == DEFAULT_OVERHEAD_TOKENS
    rnd = random.Random(0)
    for _ in range(200):
        tokens = rnd.randint(10, 400)
        cost.observe(tokens, 0.004 + 0.0002 * tokens)  # 4 ms per run, 0.2 ms per token: 20 tokens
    assert cost.overhead_tokens == pytest.approx(20.0, rel=0.01)


def test_run_cost_keeps_its_estimate_without_a_line_to_fit_and_stays_bounded() -> None:
    one_size = RunCost()
    for _ in range(50):
        one_size.observe(32, 0.01)  # one size only: no slope
    assert one_size.overhead_tokens == DEFAULT_OVERHEAD_TOKENS
    falling = RunCost()
    for tokens in (10, 400) * 50:
        falling.observe(tokens, 0.02 - 0.00001 * tokens)  # noise around a fixed cost: larger runs seemed cheaper
    assert falling.overhead_tokens == MAX_OVERHEAD_TOKENS
    fixed = RunCost()
    for tokens in (10, 400) * 50:
        fixed.observe(tokens, 1.0 + 1e-6 * tokens)  # almost all fixed: merge as much as allowed, no more
    assert fixed.overhead_tokens == MAX_OVERHEAD_TOKENS
