"""The dashboard's endpoints on a real server: the page, its state, the failure log, reports and tokens."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from leanserve.server import ObservabilityOptions
from leanserve.server.auth import DASHBOARD_COOKIE, Tokens
from tests.fixtures.onnx_models import write_mlp

from .conftest import RunningServer

GOOD = {"inputs": [{"name": "x", "shape": [1, 4], "datatype": "FP32", "data": [1, 2, 3, 4]}]}


def make_repository(root: Path) -> Path:
    write_mlp(root / "mlp" / "1" / "model.onnx", in_dim=4, out_dim=3, seed=1)
    (root / "mlp" / "report.html").write_text("<!doctype html><p>the optimize report</p>")
    (root / "mlp" / "report.json").write_text('{"chosen": "original"}')
    (root / "broken" / "1").mkdir(parents=True)
    (root / "broken" / "1" / "model.onnx").write_bytes(b"not an onnx file")
    return root


@pytest.fixture(scope="module")
def open_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    repository = make_repository(tmp_path_factory.mktemp("dash"))
    running = RunningServer(repository, observability=ObservabilityOptions(sample_seconds=0.2)).start()
    yield running
    running.stop()


def failures(server: RunningServer, **params: str) -> list[dict[str, object]]:
    response = httpx.get(f"{server.url}/v2/logs/failures", params=params)
    assert response.status_code == 200, response.text
    found: list[dict[str, object]] = response.json()["failures"]
    return found


def test_the_page_is_served_at_the_root_and_under_dashboard(open_server: RunningServer) -> None:
    for path in ("/", "/dashboard"):
        page = httpx.get(open_server.url + path)
        assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
        assert "script-src 'self'" in page.headers["content-security-policy"]
        assert "/dashboard/static/dashboard.js" in page.text
    asset = httpx.get(open_server.url + "/dashboard/static/uPlot.iife.min.js")
    assert asset.status_code == 200 and asset.headers["content-type"].startswith("text/javascript")
    assert httpx.get(open_server.url + "/dashboard/static/index.html").status_code == 404


def test_the_state_names_every_model_with_its_state_and_follows_traffic(open_server: RunningServer) -> None:
    for _ in range(20):
        assert httpx.post(f"{open_server.url}/v2/models/mlp/infer", json=GOOD).status_code == 200
    time.sleep(0.5)  # a few samples
    state = httpx.get(f"{open_server.url}/v2/dashboard/state").json()
    models = {m["name"]: m for m in state["models"]}
    assert models["mlp"]["versions"][0]["state"] == "ready"
    assert models["broken"]["versions"][0]["state"] == "failed" and models["broken"]["versions"][0]["reason"]
    assert models["mlp"]["reports"] == {
        "html": "/dashboard/reports/mlp/report.html",
        "json": "/dashboard/reports/mlp/report.json",
    }
    assert models["mlp"]["totals"]["codes"]["200"] >= 20
    assert len(state["series"]["t"]) >= 1 and "mlp" in state["series"]["models"]
    assert state["signed_in"] is False and state["failure_log"] is True


def test_every_kind_of_failed_request_is_logged(open_server: RunningServer) -> None:
    url = open_server.url
    requests = [
        ("decode", "mlp", b"{not json", 400),
        ("shape", "mlp", b'{"inputs":[{"name":"x","shape":[1,3],"datatype":"FP32","data":[1,2,3]}]}', 400),
        ("unknown-model", "ghost", b"{}", 404),
        ("failed-model", "broken", b"{}", 503),
    ]
    for request_id, model, body, status in requests:
        response = httpx.post(f"{url}/v2/models/{model}/infer", content=body, headers={"x-request-id": request_id})
        assert response.status_code == status
    response = httpx.post(f"{url}/v2/models/mlp/versions/9/infer", json=GOOD, headers={"x-request-id": "v9"})
    assert response.status_code == 404
    logged = {f["request_id"]: f for f in failures(open_server, limit="1000")}
    for request_id, model, _, status in requests:
        assert logged[request_id]["model"] == model and logged[request_id]["status"] == status
        assert logged[request_id]["client"] == "127.0.0.1" and logged[request_id]["arm"] == ""
    assert logged["decode"]["version"] == "1" and "not valid JSON" in str(logged["decode"]["message"])
    assert logged["v9"]["version"] == "9" and "no version 9" in str(logged["v9"]["message"])
    assert logged["unknown-model"]["version"] == ""


def test_the_failure_log_filters(open_server: RunningServer) -> None:
    url = open_server.url
    for i in range(3):
        httpx.post(f"{url}/v2/models/ghost/infer", json=GOOD, headers={"x-request-id": f"filter-{i}"})
    assert {f["model"] for f in failures(open_server, model="ghost")} == {"ghost"}
    assert all(f["status"] == 404 for f in failures(open_server, status="404"))
    assert all(500 <= int(str(f["status"])) < 600 for f in failures(open_server, status="5xx"))
    assert [f["request_id"] for f in failures(open_server, model="ghost", limit="2")] == ["filter-2", "filter-1"]
    assert failures(open_server, since=str(time.time() + 60)) == []
    bad = httpx.get(f"{url}/v2/logs/failures", params={"status": "teapot"})
    assert bad.status_code == 400 and "neither an HTTP status" in bad.json()["error"]


def test_reports_of_known_models_and_nothing_else(open_server: RunningServer) -> None:
    url = open_server.url
    report = httpx.get(f"{url}/dashboard/reports/mlp/report.html")
    assert report.status_code == 200 and "the optimize report" in report.text
    assert "sandbox" in report.headers["content-security-policy"]
    assert httpx.get(f"{url}/dashboard/reports/mlp/report.json").json() == {"chosen": "original"}
    for path in ("mlp/model.toml", "mlp/1", "ghost/report.html", "broken/report.html", "mlp/..%2F..%2Fetc%2Fpasswd"):
        assert httpx.get(f"{url}/dashboard/reports/{path}").status_code == 404, path


@pytest.fixture(scope="module")
def guarded_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    repository = make_repository(tmp_path_factory.mktemp("guarded"))
    running = RunningServer(repository, tokens=Tokens(admin="s3cret")).start()
    yield running
    running.stop()


def test_with_an_admin_token_the_dashboard_needs_it(guarded_server: RunningServer) -> None:
    url = guarded_server.url
    page = httpx.get(url + "/")
    assert page.status_code == 401 and 'action="/dashboard/login"' in page.text  # the sign-in form
    assert "wrong token" in httpx.get(url + "/", headers={"authorization": "Bearer nope"}).text
    for path in ("/v2/dashboard/state", "/v2/logs/failures", "/dashboard/reports/mlp/report.html"):
        assert httpx.get(url + path).status_code == 401, path
        assert httpx.get(url + path, headers={"authorization": "Bearer nope"}).status_code == 403, path
        assert httpx.get(url + path, headers={"authorization": "Bearer s3cret"}).status_code == 200, path
    assert httpx.get(url + "/dashboard/static/dashboard.css").status_code == 200  # code, no data
    # Inference is unchanged: open unless --token.
    assert httpx.post(f"{url}/v2/models/mlp/infer", json=GOOD).status_code == 200


def test_the_sign_in_form_sets_a_cookie_that_reads_the_dashboard_and_nothing_more(
    guarded_server: RunningServer,
) -> None:
    url = guarded_server.url
    wrong = httpx.post(url + "/dashboard/login", data={"token": "nope"})
    assert wrong.status_code == 403 and "wrong token" in wrong.text and DASHBOARD_COOKIE not in wrong.cookies
    signed_in = httpx.post(url + "/dashboard/login", data={"token": "s3cret"})
    assert signed_in.status_code == 303 and signed_in.headers["location"] == "/dashboard"
    set_cookie = signed_in.headers["set-cookie"]
    assert "HttpOnly" in set_cookie and "SameSite=Strict" in set_cookie
    cookie = signed_in.cookies[DASHBOARD_COOKIE]
    assert "s3cret" not in cookie  # an HMAC of the token, not the token
    with httpx.Client(base_url=url, cookies={DASHBOARD_COOKIE: cookie}) as browser:
        assert browser.get("/dashboard").status_code == 200
        assert browser.get("/v2/dashboard/state").json()["signed_in"] is True
        assert browser.get("/v2/logs/failures").status_code == 200
        assert browser.post("/v2/repository/models/mlp/unload").status_code == 401  # not model control
    forged = httpx.get(url + "/v2/dashboard/state", cookies={DASHBOARD_COOKIE: "0" * 64})
    assert forged.status_code == 401
    signed_out = httpx.post(url + "/dashboard/logout")
    assert signed_out.status_code == 303 and "Max-Age=0" in signed_out.headers["set-cookie"]


def test_refused_inference_is_logged_too(tmp_path: Path) -> None:
    running = RunningServer(make_repository(tmp_path), tokens=Tokens(inference="infer-token")).start()
    try:
        response = httpx.post(f"{running.url}/v2/models/mlp/infer", json=GOOD, headers={"x-request-id": "no-token"})
        assert response.status_code == 401
        [failure] = failures(running, status="401")
        assert (failure["request_id"], failure["model"]) == ("no-token", "mlp")
    finally:
        running.stop()


def test_the_failure_log_survives_a_restart_and_keeps_its_bound(tmp_path: Path) -> None:
    repository = make_repository(tmp_path / "repo")
    options = ObservabilityOptions(state_dir=tmp_path / "state", failure_log_entries=5)
    first = RunningServer(repository, observability=options).start()
    for i in range(8):
        httpx.post(f"{first.url}/v2/models/ghost/infer", json=GOOD, headers={"x-request-id": f"before-{i}"})
    first.stop()
    assert (tmp_path / "state" / "failures.sqlite3").is_file()
    second = RunningServer(repository, observability=options).start()
    try:
        assert [f["request_id"] for f in failures(second)] == [f"before-{i}" for i in range(7, 2, -1)]
        httpx.post(f"{second.url}/v2/models/ghost/infer", json=GOOD, headers={"x-request-id": "after"})
        assert [f["request_id"] for f in failures(second)][:2] == ["after", "before-7"]
        assert len(failures(second)) == 5
    finally:
        second.stop()


def test_by_default_the_state_lives_in_the_repository_unseen_by_the_scan(tmp_path: Path) -> None:
    running = RunningServer(make_repository(tmp_path)).start()
    try:
        httpx.post(f"{running.url}/v2/models/ghost/infer", json=GOOD)
        assert len(failures(running)) == 1
        assert (tmp_path / ".leanserve" / "failures.sqlite3").is_file()
        index = httpx.post(f"{running.url}/v2/repository/index").json()
        assert {entry["name"] for entry in index} == {"mlp", "broken"}
    finally:
        running.stop()


def test_a_state_dir_that_cannot_be_written_keeps_failures_in_memory(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    (tmp_path / "a-file").write_text("")
    options = ObservabilityOptions(state_dir=tmp_path / "a-file" / "state")
    running = RunningServer(make_repository(tmp_path / "repo"), observability=options).start()
    try:
        httpx.post(f"{running.url}/v2/models/ghost/infer", json=GOOD)
        assert len(failures(running)) == 1
        assert "failures are kept in memory only" in caplog.text
    finally:
        running.stop()


def test_no_failure_log_when_asked(tmp_path: Path) -> None:
    options = ObservabilityOptions(failure_log_entries=0)
    running = RunningServer(make_repository(tmp_path), observability=options).start()
    try:
        httpx.post(f"{running.url}/v2/models/ghost/infer", json=GOOD)
        answer = httpx.get(f"{running.url}/v2/logs/failures").json()
        assert answer == {"enabled": False, "dropped": 0, "failures": []}
        assert not (tmp_path / ".leanserve").exists()
    finally:
        running.stop()


def test_the_asgi_app_serves_the_dashboard_and_logs_failures_too(tmp_path: Path) -> None:
    from starlette.testclient import TestClient

    from leanserve import Limits, asgi_app

    app = asgi_app(make_repository(tmp_path), limits=Limits(max_body_bytes=1024))
    with TestClient(app) as client:  # the lifespan starts the failure log and the sampler
        assert client.get("/dashboard").status_code == 200
        big = client.post("/v2/models/mlp/infer", content=b" " * 2048, headers={"x-request-id": "too-big"})
        assert big.status_code == 413  # refused by the router under a plain ASGI server: logged
        assert client.get("/v2/logs/failures").json()["failures"][0]["request_id"] == "too-big"
        assert [m["name"] for m in client.get("/v2/dashboard/state").json()["models"]] == ["broken", "mlp"]
    assert (tmp_path / ".leanserve" / "failures.sqlite3").is_file()


def test_requests_refused_before_routing_are_logged_too(open_server: RunningServer) -> None:
    import socket

    host, port = "127.0.0.1", open_server.port
    over = (
        b"POST /v2/models/mlp/infer HTTP/1.1\r\nHost: x\r\nx-request-id: too-big\r\n"
        b"Content-Length: 999999999999\r\n\r\n"
    )
    garbage = b"POST /v2/models/mlp/infer HTTP/1.1\r\nx-request-id: garbled\r\nContent-Length: nope\r\n\r\n"
    for raw, status in ((over, b" 413 "), (garbage, b" 400 ")):
        with socket.create_connection((host, port), timeout=10) as s:
            s.sendall(raw)
            answer = s.recv(65536)
        assert status in answer.split(b"\r\n", 1)[0]
    logged = {f["request_id"]: f for f in failures(open_server, limit="1000")}
    assert logged["too-big"]["status"] == 413 and logged["too-big"]["model"] == "mlp"
    assert "exceeds the limit" in str(logged["too-big"]["message"])
    assert logged["garbled"]["status"] == 400
