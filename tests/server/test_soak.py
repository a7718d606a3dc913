"""The soak benchmark's 60-second version: steady load, zero errors, resident memory flat after warm-up."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.slow
def test_a_minute_of_steady_load_has_no_error_and_flat_memory(tmp_path: Path) -> None:
    out = tmp_path / "soak.json"
    run = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "soak.py"), "--duration", "60", "--clients", "4", "--out", str(out)],
        capture_output=True,
        text=True,
        timeout=240,
    )
    result = json.loads(out.read_text())
    assert result["errors"] == 0, (run.stdout, result["error_samples"])
    assert result["ok"] > 1000 and result["refused_as_expected"] > 30
    assert result["rss_growth"] < 0.05, run.stdout
    assert result["exit_code"] == 0
    assert run.returncode == 0, run.stdout + run.stderr[-2000:]
