"""The report: table, JSON (NaN as null), CSV, and the chart's absence said plainly."""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path

import pytest

from leanserve.loadgen.report import CSV_FIELDS, plot, table, to_csv, to_json
from leanserve.loadgen.results import Report, Result, SloSearch


def result(**changes: object) -> Result:
    fields: dict[str, object] = {
        "model": "m", "concurrency": 8, "rate": None, "duration_s": 4.0, "requests": 4000, "throughput": 1000.0,
        "p50_ms": 1.0, "p90_ms": 2.0, "p99_ms": 3.0, "p999_ms": 4.0, "max_ms": 5.0, "errors": {}, "client_cpu": 0.2,
        "client_saturated": False, "windows": 4, "stable": True, "throughput_ci": (990.0, 1010.0),
        "p99_ci_ms": (2.9, 3.1),
    }  # fmt: skip
    fields.update(changes)
    return Result(**fields)  # type: ignore[arg-type]


def test_table_marks_unstable_levels_and_states_the_slo() -> None:
    unstable = result(model="m", concurrency=None, rate=200.0, stable=False, errors={"503": 2})
    slo = SloSearch(5.0, 200.0, unstable, ((100.0, 1.0, True), (200.0, 3.0, True), (300.0, 9.0, False)))
    text = table(Report("http://x", {}, [result(), unstable], slo))
    assert "c8" in text and "200/s" in text and "4 !" in text and "did not stabilize" in text
    assert "highest rate 200 req/s" in text


def test_json_has_no_nan_and_csv_has_a_row_per_result() -> None:
    empty = result(throughput=0.0, p50_ms=math.nan, throughput_ci=(math.nan, math.nan))
    report = Report("http://x", {"cores": 2}, [result(), empty])
    doc = json.loads(to_json(report))
    assert doc["results"][1]["p50_ms"] is None and doc["results"][1]["throughput_ci"] == [None, None]
    assert "slo" not in doc and doc["environment"] == {"cores": 2}
    lines = to_csv(report).splitlines()
    assert lines[0].split(",") == list(CSV_FIELDS) and len(lines) == 3


def test_no_matplotlib_is_said_not_hidden(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # import matplotlib now raises ImportError
    said = plot(Report("http://x", {}, [result()]), tmp_path / "chart")
    assert isinstance(said, str) and "matplotlib" in said and not list(tmp_path.iterdir())
