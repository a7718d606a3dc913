"""The batch size that gives a model the most rows per second, learned from its own batches."""

from __future__ import annotations


class BatchSizeTuner:
    """Learns the batch size that gives the most rows per second, and caps batches there.

    On some models and CPUs larger batches *lower* throughput (all-MiniLM-L6-v2 at 128 tokens on
    the 2-core reference machine: 45 items/s at batch 1, 34 at batch 32), on others they multiply
    it (a small MLP: 80k items/s at batch 1, 400k at batch 32). Like TCP's slow start, the tuner
    begins at one row and doubles the cap while the per-row cost keeps falling; after that it
    keeps a moving average per power-of-two size and now and then tries one size up or down.

    A batch's cost is judged per unit of useful work: a row, unless the caller says otherwise. Rows
    of a ragged model differ in cost (a 40-token sentence costs about four 10-token ones), so its
    engine passes the useful tokens: judged per row, each batch's length mix drowns what its size
    changes (MiniLM's text model at c32 ran 3.5 to 7 rows per run from one run of the benchmark to the next).
    """

    EXPLORE_EVERY = 8
    MIN_SAMPLES = 2
    ALPHA = 0.2
    # Engine seconds per unit of work within which two sizes count as equal, and the larger wins. A
    # request costs the front end some 30 us besides the engine: on a small MLP (3.5 us a row) the
    # buckets of 16-31 and of 32 rows took turns as the cheapest by noise, and every turn at 16 capped
    # batches at 31, exploring at 15, leaving up to half the queue for the next cycle (p99 at c32).
    # Far under any size effect of a model whose engine time matters (MiniLM: milliseconds a row).
    TIE_SECONDS = 2e-6

    def __init__(self, max_rows: int) -> None:
        self.max_rows = max_rows
        self._top = self.bucket(max_rows)
        self._cost: dict[int, float] = {}  # bucket -> moving average of seconds per unit of work
        self._samples: dict[int, int] = {}
        self._batches = 0

    @staticmethod
    def bucket(rows: int) -> int:
        return 1 << (rows.bit_length() - 1)

    def observe(self, rows: int, seconds: float, work: float | None = None) -> None:
        """A batch of ``rows`` took ``seconds``; ``work`` is its useful work (rows when None)."""
        if rows <= 0:
            return
        b = self.bucket(rows)
        per_row = seconds / (rows if work is None or work <= 0 else work)
        previous = self._cost.get(b)
        self._cost[b] = per_row if previous is None else (1 - self.ALPHA) * previous + self.ALPHA * per_row
        self._samples[b] = self._samples.get(b, 0) + 1

    def best(self) -> int | None:
        # Plain loops over the few sizes: called for every batch, at one request a batch too.
        samples, least = self._samples, self.MIN_SAMPLES
        cheapest = None
        for b, cost in self._cost.items():
            if samples[b] >= least and (cheapest is None or cost < cheapest):
                cheapest = cost
        if cheapest is None:
            return None
        bound = cheapest + self.TIE_SECONDS
        best = 0
        for b, cost in self._cost.items():
            if b > best and cost <= bound and samples[b] >= least:
                best = b
        return best

    def limit(self) -> int:
        """Most rows the next batch may take."""
        self._batches += 1
        best = self.best()
        if best is None:
            return 1
        up = best * 2 if best < self._top else None
        growing = up is not None and self._samples.get(up, 0) < self.MIN_SAMPLES
        if growing or (up is not None and self._batches % self.EXPLORE_EVERY == 0):
            return min(self.max_rows, 2 * up - 1) if up is not None else self.max_rows
        if best > 1 and self._batches % self.EXPLORE_EVERY == self.EXPLORE_EVERY // 2:
            return best - 1  # one size down
        # Every row count in [best, 2 * best) falls in the best bucket.
        return min(self.max_rows, 2 * best - 1)


__all__ = ["BatchSizeTuner"]
