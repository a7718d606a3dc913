from __future__ import annotations

from dataclasses import replace

from leanserve.optimization.measure import NOT_MEASURABLE, Energy
from leanserve.optimization.metrics import Score
from leanserve.optimization.results import Measurements, Status, VariantResult
from leanserve.optimization.selection import choose, fallback_order, keep
from leanserve.optimization.sweep import DEFAULT_OBJECTIVE
from leanserve.timing import Latency, Spread


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


def _member(family: str, score: float, status: Status = "rejected") -> VariantResult:
    return _v(f"{family}:{score}", 0.5, 1000, score, status)


def _family(v: VariantResult) -> str:
    return v.name.partition(":")[0]


def _order(variants: list[VariantResult], families: tuple[str, ...], limit: float, higher: bool) -> list[str]:
    return fallback_order(variants, families, limit, higher, DEFAULT_OBJECTIVE, _family)


def test_fallback_searches_the_family_closest_to_the_budget_first() -> None:
    # MiniLM at a 0.99 cosine floor: dynamic int8 just misses, static QDQ is destroyed.
    variants = [_member("int8-static", 0.40), _member("int8-static", 0.37), _member("int8-dynamic", 0.9886)]
    assert _order(variants, ("int8-static", "int8-dynamic"), 0.99, True) == ["int8-dynamic", "int8-static"]


def test_fallback_skips_families_that_already_fit_or_were_not_built() -> None:
    faster_dynamic = replace(_member("int8-dynamic", 0.5), measurements=_v("x", 0.1, 9000, 0.5).measurements)
    variants = [_member("int8-static", 0.98, "accepted"), faster_dynamic]
    assert _order(variants, ("int8-static", "int8-dynamic", "fp16"), 0.99, True) == ["int8-dynamic"]


def test_fallback_order_for_an_error_ceiling() -> None:
    # mae of at most 0.01: the family with the smaller error is closer.
    variants = [_member("int8-static", 0.02), _member("int8-dynamic", 0.5)]
    assert _order(variants, ("int8-dynamic", "int8-static"), 0.01, False) == ["int8-static", "int8-dynamic"]


def test_the_summary_speaks_of_what_chose_the_variant() -> None:
    from leanserve.optimization.api import _message

    original = replace(ORIGINAL, speedup=1.0)
    fast = replace(_v("fast", 0.5, 3000, 0.99), speedup=2.0)
    assert "2.00x the original's speed at batch 1" in _message(fast, [fast], original, "latency")
    assert "3.00x the original's throughput" in _message(fast, [fast], original, "throughput")
    assert "original model is served" in _message(original, [], original, "throughput")


def test_fallback_skips_families_that_cannot_beat_an_accepted_variant() -> None:
    # Keeping nodes in float never speeds a model up: a family slower than a servable variant
    # cannot win, so its minutes-long search is not run.
    fast = _v("ov-int8-weights", 0.2, 5000, 0.998)
    slow_dynamic = replace(_member("int8-dynamic", 0.9886), measurements=_v("x", 0.4, 1800, 0).measurements)
    faster_static = replace(_member("int8-static", 0.40), measurements=_v("x", 0.1, 9000, 0).measurements)
    variants = [fast, slow_dynamic, faster_static]
    families = ("int8-static", "int8-dynamic")
    assert fallback_order(variants, families, 0.99, True, "throughput", _family) == ["int8-static"]
    assert fallback_order(variants, families, 0.99, True, "latency", _family) == ["int8-static"]
    assert _order([slow_dynamic, faster_static], families, 0.99, True) == ["int8-dynamic", "int8-static"]


def test_a_family_is_not_a_method() -> None:
    # ov-int8 is made by OpenVINO (its method) from the static QDQ model (its family): once it
    # fits, the static family has a member inside the budget and is not searched.
    from leanserve.optimization.api import _family as family_of_result

    static = replace(_v("ort-int8-static-minmax-pt", 0.5, 1000, 0.40, "rejected"), method="int8-static")
    ov_int8 = replace(_v("ov-int8", 0.3, 3000, 0.995), method="openvino")
    fallback = replace(_v("ort-int8-static-minmax-pt-fallback", 0.4, 2000, 0.9, "rejected"), method="int8-static")
    assert [family_of_result(v) for v in (static, ov_int8, fallback)] == ["int8-static"] * 3
    assert fallback_order([static, ov_int8], ("int8-static",), 0.99, True, "latency", family_of_result) == []
