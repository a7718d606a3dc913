from __future__ import annotations

from leanserve.optimize.measure import NOT_MEASURABLE, Energy, Latency, Spread
from leanserve.optimize.metrics import Score
from leanserve.optimize.results import Measurements, Status, VariantResult
from leanserve.optimize.selection import choose, keep


def _v(name: str, p50: float, tput: float, score: float, status: Status = "accepted") -> VariantResult:
    lat = Latency(1, p50, p50, p50, Spread(p50, p50, p50), 10, 1)
    m = Measurements(lat, tput, 8, None, 1, 0.0, 0.0, Energy(None, NOT_MEASURABLE), ())
    return VariantResult(name, "m", "onnxruntime", status, "", score=Score(score), measurements=m)


ORIGINAL = _v("original", 1.0, 1000, 0.99)


def test_fastest_accepted_wins_and_rejected_never_served() -> None:
    a, b, c = _v("a", 0.5, 2000, 0.98), _v("b", 0.4, 1500, 0.985), _v("c", 0.1, 9000, 0.5, "rejected")
    assert choose(ORIGINAL, [a, b, c], "latency") is b
    assert choose(ORIGINAL, [a, b, c], "throughput") is a


def test_original_when_nothing_is_faster_or_nothing_is_accepted() -> None:
    assert choose(ORIGINAL, [_v("slow", 2.0, 500, 0.99)], "latency") is ORIGINAL
    assert choose(ORIGINAL, [_v("bad", 0.1, 9000, 0.1, "rejected")], "latency") is ORIGINAL
    assert choose(ORIGINAL, [], "latency") is ORIGINAL


def test_keep_drops_dominated_variants() -> None:
    fast = _v("fast", 0.3, 3000, 0.98)
    accurate = _v("accurate", 0.6, 1500, 0.99)
    dominated = _v("dominated", 0.7, 1000, 0.98)
    kept = keep(fast, [fast, accurate, dominated], higher_is_better=True)
    assert [v.name for v in kept] == ["fast", "accurate"]
