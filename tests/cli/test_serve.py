"""``leanserve serve``: its flags reach the library as options; wrong values are usage errors (exit 2)."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import leanserve.server
from leanserve.cli import main
from leanserve.protocol import Limits
from leanserve.server import ExperimentOptions, ObservabilityOptions


@pytest.fixture
def served(monkeypatch: pytest.MonkeyPatch) -> Iterator[dict[str, Any]]:
    calls: dict[str, Any] = {}
    monkeypatch.setattr(leanserve.server, "serve", lambda repository, **kwargs: calls.update(kwargs))
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    yield calls
    root.handlers[:] = handlers  # the command configured logging for a process; this is a test
    root.setLevel(level)


def test_state_dir_failure_log_and_log_format_reach_the_server(tmp_path: Path, served: dict[str, Any]) -> None:
    argv = ["serve", str(tmp_path), "--state-dir", str(tmp_path / "state"), "--failure-log-entries", "500"]
    assert main([*argv, "--log-format", "json"]) == 0
    assert served["observability"] == ObservabilityOptions(state_dir=tmp_path / "state", failure_log_entries=500)


def test_defaults_keep_the_failure_log_in_the_repository(tmp_path: Path, served: dict[str, Any]) -> None:
    assert main(["serve", str(tmp_path)]) == 0
    assert served["observability"] == ObservabilityOptions()
    assert served["experiments"] == ExperimentOptions()  # <repository>/experiments.toml


def test_experiments_may_come_from_another_file(
    tmp_path: Path, served: dict[str, Any], capsys: pytest.CaptureFixture[str]
) -> None:
    file = tmp_path / "ab.toml"
    assert main(["serve", str(tmp_path), "--experiments", str(file)]) == 2
    assert "no such file" in capsys.readouterr().err
    file.write_text("")
    assert main(["serve", str(tmp_path), "--experiments", str(file)]) == 0
    assert served["experiments"] == ExperimentOptions(file=file)


def test_a_negative_failure_log_size_is_a_usage_error(
    tmp_path: Path, served: dict[str, Any], capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["serve", str(tmp_path), "--failure-log-entries", "-1"]) == 2
    assert "--failure-log-entries" in capsys.readouterr().err and not served


def test_limits_and_shutdown_grace_reach_the_server(tmp_path: Path, served: dict[str, Any]) -> None:
    argv = ["serve", str(tmp_path), "--max-url-bytes", "2048", "--max-header-bytes", "9000", "--header-timeout", "3"]
    assert main([*argv, "--body-timeout", "4", "--idle-timeout", "5", "--shutdown-grace", "7.5"]) == 0
    assert served["limits"] == Limits(
        max_url_bytes=2048, max_header_bytes=9000, header_timeout_s=3, body_timeout_s=4, idle_timeout_s=5
    )
    assert served["shutdown_grace_seconds"] == 7.5
    assert main(["serve", str(tmp_path)]) == 0
    assert served["limits"] == Limits() and served["shutdown_grace_seconds"] == 30.0


def test_idle_polling_reaches_the_server_in_seconds(tmp_path: Path, served: dict[str, Any]) -> None:
    assert main(["serve", str(tmp_path), "--idle-poll-us", "200"]) == 0
    assert served["idle_poll_seconds"] == pytest.approx(200e-6)
    assert main(["serve", str(tmp_path)]) == 0
    assert served["idle_poll_seconds"] is None  # the server decides from its cores (idle_poll.py)


@pytest.mark.parametrize(
    "flags",
    [
        ["--shutdown-grace", "-1"],
        ["--max-url-bytes", "0"],
        ["--idle-timeout", "-3"],
        ["--idle-poll-us", "-1"],
        ["--idle-poll-us", "20000"],
    ],
)
def test_impossible_limits_are_usage_errors(
    tmp_path: Path, served: dict[str, Any], capsys: pytest.CaptureFixture[str], flags: list[str]
) -> None:
    assert main(["serve", str(tmp_path), *flags]) == 2
    assert not served
