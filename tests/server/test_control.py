"""The model repository extension over HTTP: index, load, unload, their tokens, and `leanserve models`."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from leanserve.cli import main
from leanserve.server.auth import Tokens
from tests.fixtures.onnx_models import write_marked_model
from tests.server.conftest import RunningServer

ADMIN = "s3cret-admin-token"
BODY = {"inputs": [{"name": "x", "shape": [1, 4], "datatype": "FP32", "data": [1, 2, 3, 4]}]}


@pytest.fixture(scope="module")
def repo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("control")
    write_marked_model(root / "eager" / "1" / "model.onnx", 1.0, weight_mib=0.05)
    write_marked_model(root / "lazy" / "1" / "model.onnx", 2.0, weight_mib=0.05)
    (root / "lazy" / "model.toml").write_text('load = "on_demand"\n')
    return root


@pytest.fixture(scope="module")
def server(repo: Path) -> Iterator[RunningServer]:
    running = RunningServer(repo, tokens=Tokens(admin=ADMIN)).start()
    yield running
    running.stop()


def admin(token: str = ADMIN) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def test_an_unloaded_model_answers_metadata_and_config_and_says_why_it_is_not_ready(server: RunningServer) -> None:
    httpx.post(f"{server.url}/v2/repository/models/lazy/unload", headers=admin()).raise_for_status()
    meta = httpx.get(f"{server.url}/v2/models/lazy").json()
    assert meta["inputs"][0]["name"] == "x" and meta["parameters"]["state"] == "UNAVAILABLE"
    assert httpx.get(f"{server.url}/v2/models/lazy/config").json()["load"] == "on_demand"
    ready = httpx.get(f"{server.url}/v2/models/lazy/ready")
    assert ready.status_code == 503 and "unloaded through the control API" in ready.json()["error"]
    index = {e["name"]: e for e in httpx.post(f"{server.url}/v2/repository/index").json()}
    assert index["lazy"]["state"] == "UNAVAILABLE" and index["eager"]["state"] == "READY"
    assert [e["name"] for e in httpx.post(f"{server.url}/v2/repository/index", json={"ready": True}).json()] == [
        "eager"
    ]
    r = httpx.post(f"{server.url}/v2/models/lazy/infer", json=BODY)
    assert r.status_code == 503 and "/v2/repository/models/lazy/load" in r.json()["error"]
    assert httpx.post(f"{server.url}/v2/repository/models/lazy/load", headers=admin()).status_code == 200
    assert httpx.post(f"{server.url}/v2/models/lazy/infer", json=BODY).json()["outputs"][0]["data"] == [2.0]


@pytest.mark.parametrize("action", ["load", "unload"])
def test_control_needs_the_admin_token(server: RunningServer, action: str) -> None:
    url = f"{server.url}/v2/repository/models/eager/{action}"
    missing = httpx.post(url)
    assert missing.status_code == 401 and "needs a token" in missing.json()["error"]
    assert missing.headers["www-authenticate"] == "Bearer"
    wrong = httpx.post(url, headers=admin("guess"))
    assert wrong.status_code == 403 and "wrong token" in wrong.json()["error"]
    assert httpx.post(url, headers={"Authorization": ADMIN}).status_code == 401  # not a bearer header
    assert httpx.post(url, headers=admin()).status_code == 200
    httpx.post(f"{server.url}/v2/repository/models/eager/load", headers=admin()).raise_for_status()


def test_loading_an_unknown_model_is_a_404(server: RunningServer) -> None:
    r = httpx.post(f"{server.url}/v2/repository/models/ghost/load", headers=admin())
    assert r.status_code == 404 and "ghost" in r.json()["error"]


def test_the_token_never_reaches_the_logs(server: RunningServer, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.DEBUG):
        httpx.post(f"{server.url}/v2/repository/models/eager/unload", headers=admin("wrong-guess-123"))
        httpx.post(f"{server.url}/v2/repository/models/eager/unload", headers=admin())
        httpx.post(f"{server.url}/v2/repository/models/eager/load", headers=admin())
        httpx.post(f"{server.url}/v2/repository/models/nope/load", headers=admin())
    assert caplog.records  # the unload and load were logged ...
    assert not any(ADMIN in r.getMessage() or "wrong-guess-123" in r.getMessage() for r in caplog.records)


def test_models_command(server: RunningServer, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["models", "list", server.url]) == 0
    listing = capsys.readouterr().out
    assert "eager" in listing and "lazy" in listing and "READY" in listing
    assert main(["models", "unload", server.url, "lazy", "--admin-token", ADMIN]) == 0
    assert main(["models", "list", server.url, "--json"]) == 0
    assert '"UNAVAILABLE"' in capsys.readouterr().out
    assert main(["models", "load", server.url, "lazy", "--admin-token", "wrong"]) == 2
    assert "wrong token" in capsys.readouterr().err
    assert main(["models", "load", server.url, "lazy", "--admin-token", ADMIN]) == 0
    assert main(["models", "load", server.url]) == 2  # no model named


def test_control_is_off_without_an_admin_token(repo: Path) -> None:
    running = RunningServer(repo).start()
    try:
        r = httpx.post(f"{running.url}/v2/repository/models/eager/unload", headers=admin())
        assert r.status_code == 403 and "--admin-token" in r.json()["error"]
    finally:
        running.stop()


def test_inference_token(repo: Path) -> None:
    running = RunningServer(repo, tokens=Tokens(inference="infer-token")).start()
    try:
        assert httpx.post(f"{running.url}/v2/models/eager/infer", json=BODY).status_code == 401
        assert httpx.get(f"{running.url}/v2/models/eager").status_code == 401
        ok = httpx.post(f"{running.url}/v2/models/eager/infer", json=BODY, headers=admin("infer-token"))
        assert ok.status_code == 200
        assert httpx.get(f"{running.url}/v2/health/ready").status_code == 200  # probes stay open
    finally:
        running.stop()
