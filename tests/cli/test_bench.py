"""``leanserve bench``: the JSON schema other tools read, CSV, progress on stderr, usage errors."""

from __future__ import annotations

import csv
import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from leanserve.cli import main
from leanserve.cli.bench import milliseconds, seconds
from leanserve.loadgen.report import CSV_FIELDS
from tests.fixtures.onnx_models import write_mlp
from tests.server.conftest import RunningServer

# The contract of --json: field -> type(s). benchmarks/ and the peers' comparison read these names.
RESULT_FIELDS: dict[str, tuple[type, ...]] = {
    "model": (str,),
    "concurrency": (int, type(None)),
    "rate": (float, int, type(None)),
    "duration_s": (float,),
    "requests": (int,),
    "throughput": (float, int),
    "p50_ms": (float,),
    "p90_ms": (float,),
    "p99_ms": (float,),
    "p999_ms": (float,),
    "max_ms": (float,),
    "errors": (dict,),
    "client_cpu": (float,),
    "client_saturated": (bool,),
    "windows": (int,),
    "stable": (bool,),
    "throughput_ci": (list,),
    "p99_ci_ms": (list,),
}


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    root = tmp_path_factory.mktemp("repo")
    write_mlp(root / "mlp" / "1" / "model.onnx")
    (root / "mlp" / "model.toml").write_text("max_batch_size = 8\n")
    running = RunningServer(root).start()
    yield running
    running.stop()


QUICK = ["--duration", "0.6s", "--window", "200ms", "--warmup", "0.1s"]


def test_json_is_one_object_with_the_documented_fields(
    server: RunningServer, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = ["bench", server.url, "--model", "mlp", "--concurrency", "1,2", *QUICK, "--json"]
    assert main([*argv, "--csv", str(tmp_path / "out.csv")]) == 0
    out, err = capsys.readouterr()
    doc = json.loads(out)
    assert doc["url"] == server.url and {"cpu_model", "usable_cores", "load_average"} <= set(doc["environment"])
    assert [r["concurrency"] for r in doc["results"]] == [1, 2]
    for r in doc["results"]:
        for name, types in RESULT_FIELDS.items():
            assert isinstance(r[name], types), (name, r[name])
        assert len(r["throughput_ci"]) == 2 and len(r["p99_ci_ms"]) == 2 and r["errors"] == {}
    assert "c2: window 1" in err  # progress goes to stderr, never into the JSON
    with (tmp_path / "out.csv").open() as f:
        rows = list(csv.DictReader(f))
    assert tuple(rows[0]) == CSV_FIELDS and [r["concurrency"] for r in rows] == ["1", "2"]


def test_the_table_and_an_open_loop_rate(server: RunningServer, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["bench", server.url, "--model", "mlp", "--rate", "50", "--arrivals", "constant", *QUICK]) == 0
    out, _ = capsys.readouterr()
    assert "p99 ms" in out and "50/s" in out


@pytest.mark.slow  # matplotlib's first import builds its font cache
def test_a_chart(server: RunningServer, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    pytest.importorskip("matplotlib")
    assert main(["bench", server.url, "--model", "mlp", *QUICK, "--plot", str(tmp_path / "chart")]) == 0
    _, err = capsys.readouterr()
    assert (tmp_path / "chart.png").stat().st_size > 1000 and (tmp_path / "chart.svg").read_text().startswith("<?xml")
    assert "chart: " in err


@pytest.mark.slow  # an interpreter's start and imports: seconds on a loaded machine
def test_a_separate_process_prints_only_json_on_stdout(server: RunningServer) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "leanserve", "bench", server.url, "--model", "mlp", *QUICK, "--json", "--binary"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    (result,) = json.loads(done.stdout)["results"]
    assert result["concurrency"] == 1 and result["errors"] == {} and "window" in done.stderr


def test_usage_errors_exit_2(server: RunningServer, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["bench", server.url]) == 2
    assert main(["bench", server.url, "--model", "mlp", "--mix", "zipf:1.1"]) == 2
    assert "--mix needs several" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["bench", server.url, "--model", "mlp", "--concurrency", "1", "--rate", "5"])


def test_an_unknown_model_says_which(server: RunningServer, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["bench", server.url, "--model", "nope", *QUICK]) != 0
    assert "nope" in capsys.readouterr().err


def test_durations() -> None:
    assert seconds("20s") == 20 and seconds("500ms") == 0.5 and seconds("2m") == 120 and seconds("3") == 3
    assert milliseconds("5ms") == 5 and milliseconds("5") == 5 and milliseconds("250us") == pytest.approx(0.25)
