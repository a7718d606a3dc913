"""Experiments through a real server: aliases called like models, sticky splits, feedback, canaries
that roll themselves back, shadows that compare and shed, the /v2/experiments endpoints and restarts."""

from __future__ import annotations

import json
import subprocess
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from leanserve.errors import ConfigError
from leanserve.server.auth import Tokens
from leanserve.server.experiments import ExperimentOptions
from tests.fixtures.experiments import EXPERIMENTS, write_repository
from tests.server.conftest import RunningServer

ADMIN = "experiment-admin-token"
BODY = {"inputs": [{"name": "x", "shape": [1, 4], "datatype": "FP32", "data": [1, 2, 3, 4]}]}
FAST = ExperimentOptions(evaluate_seconds=0.1)


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    root = write_repository(tmp_path_factory.mktemp("experiments"))
    running = RunningServer(root, tokens=Tokens(admin=ADMIN), experiments=FAST).start()
    yield running
    running.stop()


def admin(token: str = ADMIN) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def infer(url: str, alias: str, unit: str | None = None, **body: Any) -> httpx.Response:
    headers = {"X-Leanserve-Unit": unit} if unit is not None else {}
    return httpx.post(f"{url}/v2/models/{alias}/infer", json={**BODY, **body}, headers=headers)


def status(url: str, name: str) -> dict[str, Any]:
    r = httpx.get(f"{url}/v2/experiments/{name}", headers=admin())
    r.raise_for_status()
    result: dict[str, Any] = r.json()
    return result


def wait_for(check: Callable[[], bool], seconds: float = 30.0) -> None:
    end = time.monotonic() + seconds
    while not check():
        if time.monotonic() > end:
            raise TimeoutError("condition not met in time")
        time.sleep(0.05)


def test_a_split_is_sticky_per_unit_and_every_answer_names_its_arm(server: RunningServer) -> None:
    seen: Counter[str] = Counter()
    for i in range(40):
        unit = f"user-{i}"
        by_header = infer(server.url, "ab", unit)
        by_parameter = infer(server.url, "ab", parameters={"unit": unit})
        again = infer(server.url, "ab", unit)
        arms = {r.headers["x-leanserve-arm"] for r in (by_header, by_parameter, again)}
        assert len(arms) == 1, f"{unit} moved between arms: {arms}"
        arm = arms.pop()
        seen[arm] += 1
        answer = by_header.json()
        assert answer["model_name"] == "ab" and answer["parameters"]["leanserve_arm"] == arm
        assert arm == f"m:{answer['model_version']}"
        assert answer["outputs"][0]["data"] == [float(answer["model_version"])]  # m:1 answers 1.0, m:2 2.0
        assert by_parameter.json()["parameters"] == {"unit": unit, "leanserve_arm": arm}
    assert set(seen) == {"m:1", "m:2"}  # 40 units, 50/50: both arms (all on one: 2 in 10^12)


def test_feedback_by_response_id_or_unit_lands_on_the_arm_that_answered(server: RunningServer) -> None:
    answers = [infer(server.url, "ab", id=f"order-{i}") for i in range(20)]
    assert [a.json()["id"] for a in answers] == [f"order-{i}" for i in range(20)]
    no_id = infer(server.url, "ab").json()
    assert no_id["id"].startswith("ls-")  # with feedback, an answer always carries an id: its key
    for a in answers[:5]:
        r = httpx.post(f"{server.url}/v2/experiments/ab/feedback", json={"key": a.json()["id"], "reward": 1})
        assert r.status_code == 200
    infer(server.url, "ab", "buyer")
    assert httpx.post(f"{server.url}/v2/experiments/ab/feedback", json={"key": "buyer"}).status_code == 200
    unknown = httpx.post(f"{server.url}/v2/experiments/ab/feedback", json={"key": "never-answered"})
    assert unknown.status_code == 200  # counted as orphaned: feedback may outlive its window
    bad = httpx.post(f"{server.url}/v2/experiments/ab/feedback", json={"reward": 1})
    assert bad.status_code == 400 and "key" in bad.json()["error"]
    wrong_metric = httpx.post(f"{server.url}/v2/experiments/mirror/feedback", json={"key": "x"})
    assert wrong_metric.status_code == 400 and "takes no feedback" in wrong_metric.json()["error"]

    doc = status(server.url, "ab")
    rewarded = {a["label"]: a["feedback"]["with_feedback"] for a in doc["arms"]}
    expected = Counter(a.headers["x-leanserve-arm"] for a in answers[:5])
    buyer_arm = infer(server.url, "ab", "buyer").headers["x-leanserve-arm"]
    expected[buyer_arm] += 1
    assert rewarded == {label: expected.get(label, 0) for label in ("m:1", "m:2")}
    assert doc["orphan_feedback"] == 1


def test_status_shows_counts_latencies_the_statistics_and_the_decision(server: RunningServer) -> None:
    for i in range(30):
        assert infer(server.url, "ab", f"s-{i}").status_code == 200
    doc = status(server.url, "ab")
    assert (doc["name"], doc["mode"], doc["phase"]) == ("ab", "split", "running")
    arms = {a["label"]: a for a in doc["arms"]}
    assert sum(a["requests"] for a in arms.values()) >= 30
    assert sum(a["assigned"] for a in arms.values()) == sum(a["requests"] for a in arms.values())
    for arm in arms.values():
        p50 = arm["latency_s"]["p50"]
        assert 0 < p50["estimate"] < 1 and p50["lower"] <= p50["estimate"]
        assert arm["error_rate"]["estimate"] == 0.0 and arm["share"] == 0.5
    assert {c["name"] for c in doc["checks"]} >= {"conversion", "error_rate_increase", "p99_ratio"}
    assert doc["srm"]["test"] == "sequential" and 0 <= doc["srm"]["p_value"] <= 1
    assert doc["decision"]["action"] == "continue"
    listed = httpx.get(f"{server.url}/v2/experiments", headers=admin()).json()["experiments"]
    assert {e["name"]: e["mode"] for e in listed} == {
        "ab": "split",
        "mirror": "shadow",
        "busy": "shadow",
        "risky": "canary",
    }


def test_an_alias_answers_metadata_readiness_and_configuration_with_its_control(server: RunningServer) -> None:
    meta = httpx.get(f"{server.url}/v2/models/ab").json()
    assert meta["name"] == "ab" and meta["versions"] == ["1"]
    assert meta["inputs"] == [{"name": "x", "datatype": "FP32", "shape": [-1, 4]}]
    assert meta["parameters"]["experiment"] == {
        "mode": "split",
        "phase": "running",
        "control": "m:1",
        "arms": ["m:1", "m:2"],
    }
    assert httpx.get(f"{server.url}/v2/models/ab/ready").status_code == 200
    config = httpx.get(f"{server.url}/v2/models/ab/config").json()
    assert config["name"] == "ab" and config["version"] == 1
    versioned = infer_url = f"{server.url}/v2/models/ab/versions/2/infer"
    r = httpx.post(infer_url, json=BODY)
    assert r.status_code == 400 and "experiment alias" in r.json()["error"], versioned
    assert httpx.get(f"{server.url}/v2/models/ab/versions/1").status_code == 400


def test_a_canary_whose_candidate_fails_rolls_back_by_itself(server: RunningServer) -> None:
    """Candidate ``two`` answers every one-row request with a 500; the control never fails."""
    codes: Counter[tuple[str, int]] = Counter()

    def rolled_back() -> bool:
        for i in range(10):
            r = infer(server.url, "risky", f"c-{time.monotonic_ns()}-{i}")
            codes[(r.headers.get("x-leanserve-arm", ""), r.status_code)] += 1
        return bool(status(server.url, "risky")["phase"] == "rolled_back")

    wait_for(rolled_back)
    assert codes[("two:1", 500)] >= 10 and codes[("m:1", 200)] >= 10  # the candidate did fail, and was counted
    doc = status(server.url, "risky")
    last = doc["decisions"][-1]
    assert (last["action"], last["rule"]) == ("rollback", "harm") and "error_rate" in last["reason"]
    after = [infer(server.url, "risky", f"after-{i}") for i in range(20)]
    assert {(r.status_code, r.headers["x-leanserve-arm"]) for r in after} == {(200, "m:1")}
    failures = httpx.get(f"{server.url}/v2/logs/failures?model=two", headers=admin()).json()["failures"]
    assert failures and {f["arm"] for f in failures} == {"risky/two:1"} and failures[0]["status"] == 500
    metrics = httpx.get(f"{server.url}/metrics").text
    assert 'leanserve_experiment_requests_total{arm="two:default",experiment="risky",outcome="server_error"}' in metrics
    assert 'leanserve_experiment_phase{experiment="risky",phase="rolled_back"} 1.0' in metrics


def test_a_shadow_answers_from_the_control_and_compares_the_candidate(server: RunningServer) -> None:
    before = status(server.url, "mirror")["shadow"]["compared"]
    answers = [infer(server.url, "mirror", f"sh-{i}") for i in range(30)]
    assert {(r.status_code, r.headers["x-leanserve-arm"]) for r in answers} == {(200, "m:1")}
    assert {r.json()["outputs"][0]["data"][0] for r in answers} == {1.0}  # the control's answers only
    assert "id" not in answers[0].json()  # no feedback here: the answer is the model's, plus the arm
    wait_for(lambda: status(server.url, "mirror")["shadow"]["compared"] >= before + 30)
    doc = status(server.url, "mirror")
    shadow = doc["shadow"]
    assert shadow["mirrored"] == shadow["compared"] and shadow["shed"] == 0
    assert shadow["agreement"]["estimate"] == 0.0  # m:2 answers 2.0 where m:1 answers 1.0
    candidate = doc["arms"][1]
    assert candidate["role"] == "candidate" and candidate["requests"] == shadow["compared"]
    assert candidate["assigned"] == 0  # copies are not assignments


def test_shadow_copies_are_shed_when_the_candidate_falls_behind(server: RunningServer) -> None:
    """``slow`` takes milliseconds per request against the control's tenth of one; one copy in flight at most."""
    results: list[tuple[int, str]] = []

    def client() -> None:
        with httpx.Client() as http:
            for _ in range(40):
                r = http.post(f"{server.url}/v2/models/busy/infer", json=BODY)
                results.append((r.status_code, r.headers["x-leanserve-arm"]))

    threads = [threading.Thread(target=client) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert set(results) == {(200, "m:1")} and len(results) == 320

    def copies_answered() -> bool:
        shadow = status(server.url, "busy")["shadow"]
        return bool(shadow["compared"] == shadow["mirrored"])

    wait_for(copies_answered)
    shadow = status(server.url, "busy")["shadow"]
    assert shadow["shed"] > 0 and shadow["mirrored"] + shadow["shed"] == 320
    assert shadow["agreement"]["estimate"] == 1.0  # slow answers 1.0 too
    metrics = httpx.get(f"{server.url}/metrics").text
    assert f'leanserve_experiment_shadow_shed_total{{experiment="busy"}} {float(shadow["shed"])}' in metrics


@pytest.mark.slow
def test_under_load_copies_are_shed_and_at_idle_every_request_is_mirrored(
    server: RunningServer, tmp_path: Path
) -> None:
    """Copies take the server's idle moments only: hey keeps every loop turn busy, so nearly all are shed
    (and counted); one request at a time leaves the loop idle between them, so every one is copied."""

    # Its own shadow, whose latency guardrail cannot stop it midway: under load the copies wait behind
    # the control's requests, and a shadow's p99 guardrail reads that as a slow candidate.
    table = {
        "name": "soak",
        "mode": "shadow",
        "arms": [{"model": "m", "version": 1}, {"model": "m", "version": 2}],
        "max_p99_ratio": 1000.0,
    }
    if "soak" not in {
        e["name"] for e in httpx.get(f"{server.url}/v2/experiments", headers=admin()).json()["experiments"]
    }:
        httpx.post(f"{server.url}/v2/experiments", json=table, headers=admin()).raise_for_status()

    def shadow() -> dict[str, Any]:
        doc = status(server.url, "soak")
        assert doc["phase"] == "running"
        return {**doc["shadow"], "control": doc["arms"][0]["requests"]}

    def settled() -> dict[str, Any]:
        wait_for(lambda: shadow()["compared"] == shadow()["mirrored"])
        return shadow()

    before = settled()
    body = tmp_path / "body.json"
    body.write_text(json.dumps(BODY))
    subprocess.run(
        ["hey", "-z", "2s", "-c", "32", "-m", "POST", "-T", "application/json", "-D", str(body),
         f"{server.url}/v2/models/soak/infer"],
        check=True, capture_output=True, timeout=60,
    )  # fmt: skip
    loaded = settled()
    answered = loaded["control"] - before["control"]
    mirrored, shed = loaded["mirrored"] - before["mirrored"], loaded["shed"] - before["shed"]
    assert answered > 100 and mirrored + shed == answered  # every copy either went or was counted as shed
    assert shed > answered / 2, (mirrored, shed)  # busy: most copies gave way to the control
    metrics = httpx.get(f"{server.url}/metrics").text
    assert f'leanserve_experiment_shadow_shed_total{{experiment="soak"}} {float(loaded["shed"])}' in metrics

    for i in range(20):  # idle between requests: every one is copied
        assert infer(server.url, "soak", f"idle-{i}").status_code == 200
    idle = settled()
    assert (idle["mirrored"] - loaded["mirrored"], idle["shed"] - loaded["shed"]) == (20, 0)


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("POST", "/v2/experiments"),
        ("POST", "/v2/experiments/ab/stop"),
        ("POST", "/v2/experiments/ab/promote"),
        ("POST", "/v2/experiments/ab/rollback"),
        ("GET", "/v2/experiments"),
        ("GET", "/v2/experiments/ab"),
    ],
)
def test_the_experiment_endpoints_need_the_admin_token(server: RunningServer, method: str, path: str) -> None:
    assert httpx.request(method, server.url + path).status_code == 401
    assert httpx.request(method, server.url + path, headers=admin("wrong")).status_code == 403


def test_operators_start_promote_stop_and_roll_back_through_the_api(server: RunningServer) -> None:
    table = {"name": "fresh", "mode": "split", "arms": [{"model": "m", "version": 1}, {"model": "m", "version": 2}]}
    started = httpx.post(f"{server.url}/v2/experiments", json=table, headers=admin())
    assert started.status_code == 200 and started.json()["phase"] == "running"
    assert infer(server.url, "fresh", "u").status_code == 200
    again = httpx.post(f"{server.url}/v2/experiments", json=table, headers=admin())
    assert again.status_code == 409
    taken = httpx.post(f"{server.url}/v2/experiments", json={**table, "name": "m"}, headers=admin())
    assert taken.status_code == 409 and "model's name" in taken.json()["error"]
    wrong = httpx.post(f"{server.url}/v2/experiments", json={**table, "name": "w", "steps": [100]}, headers=admin())
    assert wrong.status_code == 400 and "experiments.w.steps" in wrong.json()["error"]
    missing = {**table, "name": "gone", "arms": [{"model": "m"}, {"model": "nope"}]}
    r = httpx.post(f"{server.url}/v2/experiments", json=missing, headers=admin())
    assert r.status_code == 400 and "no model 'nope'" in r.json()["error"]

    promoted = httpx.post(f"{server.url}/v2/experiments/fresh/promote", json={"arm": "m:2"}, headers=admin())
    assert promoted.json()["phase"] == "promoted" and promoted.json()["winner"] == 1
    assert {infer(server.url, "fresh", f"p-{i}").headers["x-leanserve-arm"] for i in range(10)} == {"m:2"}
    stopped = httpx.post(f"{server.url}/v2/experiments/fresh/stop", json={"reason": "done"}, headers=admin())
    assert stopped.json()["phase"] == "stopped"
    assert {infer(server.url, "fresh", f"s-{i}").headers["x-leanserve-arm"] for i in range(10)} == {"m:1"}
    log = [d for d in stopped.json()["decisions"] if d["rule"] == "operator"]
    assert [d["action"] for d in log] == ["promote", "stop"]
    assert log[-1]["reason"] == "stopped by the operator: done"
    rolled = httpx.post(f"{server.url}/v2/experiments/fresh/rollback", headers=admin())
    assert rolled.json()["phase"] == "rolled_back"
    assert httpx.post(f"{server.url}/v2/experiments/nope/stop", headers=admin()).status_code == 404


def test_without_an_admin_token_reading_is_open_and_control_is_off(tmp_path: Path) -> None:
    root = write_repository(tmp_path, EXPERIMENTS.split("[experiments.mirror]")[0])
    running = RunningServer(root, tokens=Tokens(inference="infer-token")).start()
    try:
        assert httpx.get(f"{running.url}/v2/experiments/ab").status_code == 200
        r = httpx.post(f"{running.url}/v2/experiments/ab/stop")
        assert r.status_code == 403 and "no admin token" in r.json()["error"]
        feedback = f"{running.url}/v2/experiments/ab/feedback"
        assert httpx.post(feedback, json={"key": "k"}).status_code == 401  # feedback: the inference token
        assert httpx.post(feedback, json={"key": "k"}, headers=admin("infer-token")).status_code == 200
    finally:
        running.stop()


def test_a_restart_keeps_counts_outcomes_feedback_and_decisions(tmp_path: Path) -> None:
    root = write_repository(tmp_path, EXPERIMENTS.split("[experiments.mirror]")[0])
    state = tmp_path / "state"
    from leanserve.server import ObservabilityOptions

    def start() -> RunningServer:
        return RunningServer(
            root, tokens=Tokens(admin=ADMIN), experiments=FAST, observability=ObservabilityOptions(state_dir=state)
        ).start()

    first = start()
    try:
        table = {"name": "api", "mode": "canary", "arms": [{"model": "m", "version": 1}, {"model": "m", "version": 2}]}
        httpx.post(f"{first.url}/v2/experiments", json=table, headers=admin()).raise_for_status()
        arms = {u: infer(first.url, "ab", u).headers["x-leanserve-arm"] for u in (f"r-{i}" for i in range(25))}
        for i in range(10):
            infer(first.url, "api", f"a-{i}")
        httpx.post(f"{first.url}/v2/experiments/ab/feedback", json={"key": "r-1"}).raise_for_status()
        httpx.post(f"{first.url}/v2/experiments/api/stop", json={"reason": "enough"}, headers=admin())
        before = {name: status(first.url, name) for name in ("ab", "api")}
    finally:
        first.stop()
    assert (state / "experiments.sqlite3").exists() and (state / "experiments.json").exists()

    second = start()
    try:
        after = {name: status(second.url, name) for name in ("ab", "api")}
        for name in ("ab", "api"):
            for key in ("phase", "decisions", "arms", "orphan_feedback"):
                assert after[name][key] == before[name][key], (name, key)
        assert after["api"]["phase"] == "stopped" and after["api"]["decisions"][-1]["reason"].endswith("enough")
        assert sum(a["requests"] for a in after["ab"]["arms"]) == 25
        assert sum(a["feedback"]["with_feedback"] for a in after["ab"]["arms"]) == 1
        assert {u: infer(second.url, "ab", u).headers["x-leanserve-arm"] for u in arms} == arms  # still sticky
    finally:
        second.stop()


@pytest.mark.parametrize(
    ("experiments", "message"),
    [
        ('[experiments.m]\nmode = "split"\narms = [{model = "m"}, {model = "m", version = 2}]', "model's name"),
        ('[experiments.x]\nmode = "split"\narms = [{model = "m"}, {model = "m", version = 9}]', "no version 9"),
        ('[experiments.x]\nmode = "split"\narms = [{model = "nope"}, {model = "m"}]', "no model 'nope'"),
        ('[experiments.x]\nmode = "split"\narms = [{model = "m"}]', "at least 2 arms"),
    ],
)
def test_a_wrong_experiments_toml_stops_the_server_at_start_up(tmp_path: Path, experiments: str, message: str) -> None:
    root = write_repository(tmp_path, experiments)
    with pytest.raises(ConfigError, match=message):
        RunningServer(root).start()


def test_the_asgi_app_serves_aliases_and_writes_their_records_at_shutdown(tmp_path: Path) -> None:
    from starlette.testclient import TestClient

    from leanserve.experiments import Experiment, load_experiments
    from leanserve.server import asgi_app

    root = write_repository(tmp_path, EXPERIMENTS.split("[experiments.mirror]")[0])
    with TestClient(asgi_app(root, experiments=FAST)) as client:
        arms = set()
        for i in range(12):
            answers = [
                client.post("/v2/models/ab/infer", json=BODY, headers={"X-Leanserve-Unit": f"u{i}"}) for _ in "ab"
            ]
            assert answers[0].headers["x-leanserve-arm"] == answers[1].headers["x-leanserve-arm"]
            arms.add(answers[0].headers["x-leanserve-arm"])
        assert arms == {"m:1", "m:2"} and client.get("/v2/experiments/ab").json()["name"] == "ab"
    config = load_experiments(root / "experiments.toml")["ab"]
    with Experiment.open(config, root / ".leanserve" / "experiments.sqlite3") as reopened:
        assert sum(a["requests"] for a in reopened.status()["arms"]) == 24
