"""``leanserve experiment``: start, status, promote, stop, roll back and feedback against a running server."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from leanserve.cli import main
from leanserve.server.auth import Tokens
from tests.fixtures.experiments import EXPERIMENTS, write_repository
from tests.server.conftest import RunningServer

ADMIN = "cli-admin-token"
BODY = {"inputs": [{"name": "x", "shape": [1, 4], "datatype": "FP32", "data": [1, 2, 3, 4]}]}


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    root = write_repository(tmp_path_factory.mktemp("cli"), EXPERIMENTS.split("[experiments.mirror]")[0])
    running = RunningServer(root, tokens=Tokens(admin=ADMIN)).start()
    yield running
    running.stop()


def test_start_watch_promote_stop_and_roll_back(server: RunningServer, capsys: pytest.CaptureFixture[str]) -> None:
    token = ["--admin-token", ADMIN]
    argv = ["experiment", "start", server.url, "cli", "--mode", "canary", "--arm", "m:1", "--arm", "m:2", *token]
    assert main([*argv, "--steps", "10,50,100"]) == 0
    started = capsys.readouterr().out
    assert "cli: canary, running, step 1 (10%)" in started and "m:2" in started and "candidate" in started
    for i in range(20):
        r = httpx.post(f"{server.url}/v2/models/cli/infer", json=BODY, headers={"X-Leanserve-Unit": f"u{i}"})
        assert r.status_code == 200
    assert main(["experiment", "status", server.url, *token]) == 0
    listing = capsys.readouterr().out
    assert "cli" in listing and "canary" in listing and "ab" in listing and "10%" in listing
    assert main(["experiment", "status", server.url, "cli", "--json", *token]) == 0
    status = json.loads(capsys.readouterr().out)
    assert sum(a["requests"] for a in status["arms"]) == 20 and status["share_percent"] == 10
    assert main(["experiment", "promote", server.url, "cli", "--arm", "m:2", "--reason", "looks good", *token]) == 0
    assert "cli: canary, promoted" in capsys.readouterr().out
    assert main(["experiment", "stop", server.url, "cli", *token]) == 0
    assert "stopped" in capsys.readouterr().out
    assert main(["experiment", "rollback", server.url, "cli", *token]) == 0
    out = capsys.readouterr().out
    assert "rolled_back" in out and "promoted by the operator: looks good" in out


def test_start_from_a_file(server: RunningServer, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    file = tmp_path / "exp.toml"
    file.write_text(
        '[experiments.filed]\nmode = "split"\narms = [{model = "m", version = 1, weight = 3}, {model = "m"}]\n'
    )
    assert main(["experiment", "start", server.url, "filed", "--file", str(file), "--admin-token", ADMIN]) == 0
    assert "75.0%" in capsys.readouterr().out  # the control's share of a 3:1 split


def test_feedback(server: RunningServer) -> None:
    answer = httpx.post(f"{server.url}/v2/models/ab/infer", json={**BODY, "id": "order-7"}).json()
    assert main(["experiment", "feedback", server.url, "ab", answer["id"], "--reward", "1"]) == 0
    status = httpx.get(f"{server.url}/v2/experiments/ab", headers={"Authorization": f"Bearer {ADMIN}"}).json()
    assert sum(a["feedback"]["with_feedback"] for a in status["arms"]) == 1


def test_mistakes_are_usage_or_client_errors(server: RunningServer, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["experiment", "stop", server.url]) == 2
    assert "needs a NAME" in capsys.readouterr().err
    assert main(["experiment", "start", server.url, "x", "--mode", "split", "--admin-token", ADMIN]) == 2
    assert "mode and arms" in capsys.readouterr().err
    assert main(["experiment", "stop", server.url, "ab", "--admin-token", "wrong"]) == 2
    assert "wrong token" in capsys.readouterr().err
    assert main(["experiment", "stop", server.url, "nope", "--admin-token", ADMIN]) == 2
    assert "no experiment 'nope'" in capsys.readouterr().err
    assert main(["experiment", "start", server.url, "y", "--mode", "split", "--arm", "m:x", "--arm", "m"]) == 2
    assert "MODEL[:VERSION][=WEIGHT]" in capsys.readouterr().err
