from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pytest

from leanserve.optimization.data import from_arrays
from leanserve.optimization.fallback import Attempt, RankedNode, exclusion_steps, rank_nodes, search
from leanserve.optimization.variants import CATALOG, Builder, BuiltVariant

from .conftest import ModelFixture


def test_exclusion_steps() -> None:
    assert exclusion_steps(0, 6) == []
    assert exclusion_steps(1, 6) == [1]
    assert exclusion_steps(5, 6) == [1, 2, 4, 5]
    assert exclusion_steps(100, 4) == [1, 2, 4, 8]


def test_rank_nodes_finds_every_quantized_node(mlp: ModelFixture, tmp_path: Path) -> None:
    data = from_arrays({"x": np.load(mlp.data)["x"][:32]})
    builder = Builder(mlp.model, tmp_path, data, dynamic_batch=True)
    built = builder.build(CATALOG["ort-int8-static-minmax-pt"])
    prepared, _ = builder.prepared()
    ranking = rank_nodes(prepared, built.model_file, data, batch_size=16)
    names = {r.name for r in ranking}
    assert any(n.startswith("fc1") for n in names) and any(n.startswith("fc2") for n in names)
    assert ranking == sorted(ranking, key=lambda r: r.added_error, reverse=True)
    assert all(np.isfinite(r.added_error) for r in ranking)


RANKING = [RankedNode(f"n{i}", "MatMul", 1.0 / (i + 1)) for i in range(6)]


def _attempts(scores: dict[int, tuple[float, bool, float]]):  # type: ignore[no-untyped-def]
    seen: list[int] = []

    def attempt(exclude: Sequence[str]) -> Attempt:
        seen.append(len(exclude))
        score, ok, ms = scores[len(exclude)]
        return Attempt(BuiltVariant.__new__(BuiltVariant), score, ok, ms)

    return attempt, seen


def test_search_stops_when_inside_the_budget() -> None:
    attempt, seen = _attempts({1: (0.5, False, 1.0), 2: (0.9, True, 1.2)})
    report, found = search("v", RANKING, attempt, baseline_ms=2.0)
    assert found is not None and seen == [1, 2]
    assert [n.name for n in report.kept_in_float] == ["n0", "n1"]
    assert "fits the budget" in report.outcome


def test_search_stops_when_no_longer_faster() -> None:
    attempt, seen = _attempts({1: (0.5, False, 1.0), 2: (0.6, False, 2.5)})
    report, found = search("v", RANKING, attempt, baseline_ms=2.0)
    assert found is None and seen == [1, 2]
    assert "no faster" in report.outcome


@pytest.mark.parametrize("steps", [2, 6])
def test_search_gives_up_after_max_steps(steps: int) -> None:
    attempt, seen = _attempts({k: (0.1, False, 0.5) for k in range(7)})
    report, found = search("v", RANKING, attempt, baseline_ms=2.0, max_steps=steps)
    assert found is None and len(seen) <= steps and "still outside" in report.outcome
