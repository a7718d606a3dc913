from __future__ import annotations

import pytest

from leanserve.batch_size import BatchSizeTuner


def _train(tuner: BatchSizeTuner, cost_per_row: dict[int, float], batches: int, queued: int = 64) -> list[int]:
    """Drive the tuner as a busy batcher would: every batch takes as many rows as the limit allows."""
    sizes = []
    for _ in range(batches):
        rows = min(tuner.limit(), queued)
        sizes.append(rows)
        tuner.observe(rows, rows * cost_per_row[BatchSizeTuner.bucket(rows)])
    return sizes


def test_tuner_grows_to_the_largest_batch_when_batching_pays() -> None:
    tuner = BatchSizeTuner(32)
    sizes = _train(tuner, {1: 10.0, 2: 6.0, 4: 3.0, 8: 2.0, 16: 1.0, 32: 0.5}, 60)
    assert tuner.best() == 32
    assert sizes[-8:].count(32) >= 7


def test_tuner_steps_back_when_larger_batches_lower_throughput() -> None:
    tuner = BatchSizeTuner(32)
    sizes = _train(tuner, {1: 1.0, 2: 1.2, 4: 1.3, 8: 1.4, 16: 1.5, 32: 1.6}, 60)
    assert tuner.best() == 1
    assert sum(1 for s in sizes[-16:] if s == 1) >= 14  # only occasional exploration


def test_tuner_finds_a_middle_optimum() -> None:
    tuner = BatchSizeTuner(32)
    _train(tuner, {1: 5.0, 2: 3.0, 4: 2.0, 8: 1.5, 16: 2.5, 32: 3.0}, 100)
    assert tuner.best() == 8
    assert tuner.limit() <= 16


def test_tuner_counts_microseconds_of_difference_as_a_tie_and_keeps_the_larger_batch() -> None:
    # A small MLP: 16-31 rows and 32 rows cost the same within noise (3.5 against 3.6 us a row).
    # Judged by the strict minimum, batches would be capped at 31 and explored at 15, leaving
    # rows of a full queue behind for the next cycle at every batch.
    us = 1e-6
    tuner = BatchSizeTuner(32)
    sizes = _train(tuner, {1: 20 * us, 2: 12 * us, 4: 7 * us, 8: 4.5 * us, 16: 3.5 * us, 32: 3.6 * us}, 80, queued=32)
    assert tuner.best() == 32
    assert 15 not in sizes[-32:]
    assert sizes[-32:].count(32) >= 28  # one size down now and then, to keep the smaller sizes measured


def test_tuner_still_steps_back_for_a_model_whose_rows_cost_milliseconds() -> None:
    # 0.5% a row is 100 us on a 20 ms row: a real size effect, not noise at the tie's scale.
    tuner = BatchSizeTuner(32)
    _train(tuner, {1: 0.0200, 2: 0.0201, 4: 0.0203, 8: 0.0205, 16: 0.021, 32: 0.022}, 60)
    assert tuner.best() == 1


@pytest.mark.parametrize(("told", "best"), [(False, 1), (True, 32)])
def test_tuner_judges_useful_work_when_told_it(told: bool, best: int) -> None:
    # A ragged model: the batches of more rows happened to hold longer sentences, so each row cost
    # more, while each token cost less. Judged per row the tuner would stay at one row.
    per_token = {1: 1.0, 2: 0.8, 4: 0.6, 8: 0.5, 16: 0.45, 32: 0.4}
    tuner = BatchSizeTuner(32)
    for _ in range(80):
        rows = min(tuner.limit(), 64)
        bucket = BatchSizeTuner.bucket(rows)
        tokens = rows * 8 * bucket.bit_length()
        tuner.observe(rows, tokens * per_token[bucket], tokens if told else None)
    assert tuner.best() == best
