"""Hot swap under steady load: new versions switch in without losing a request; a broken one changes nothing."""

from __future__ import annotations

import threading
import time
from collections import Counter
from pathlib import Path

import httpx

from tests.fixtures.onnx_models import write_marked_model
from tests.server.conftest import RunningServer

BODY = {"inputs": [{"name": "x", "shape": [1, 4], "datatype": "FP32", "data": [1, 2, 3, 4]}]}


def wait_for(condition: object, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():  # type: ignore[operator]
            return
        time.sleep(0.05)
    raise TimeoutError("condition not met")


def test_hot_swap_under_load_loses_nothing(tmp_path: Path) -> None:
    write_marked_model(tmp_path / "m" / "1" / "model.onnx", 1.0, weight_mib=1)
    running = RunningServer(tmp_path, poll_seconds=0.1).start()
    answers: Counter[float] = Counter()
    errors: list[str] = []
    stop = threading.Event()

    def client() -> None:
        with httpx.Client(base_url=running.url, timeout=30) as http:
            while not stop.is_set():
                r = http.post("/v2/models/m/infer", json=BODY)
                if r.status_code != 200:
                    errors.append(f"{r.status_code} {r.text}")
                else:
                    answers[r.json()["outputs"][0]["data"][0]] += 1

    clients = [threading.Thread(target=client) for _ in range(4)]
    try:
        for c in clients:
            c.start()
        wait_for(lambda: answers[1.0] > 50)
        write_marked_model(tmp_path / "m" / "2" / "model.onnx", 2.0, weight_mib=1)
        wait_for(lambda: answers[2.0] > 50)
        before = answers[2.0]

        (tmp_path / "m" / "3").mkdir()
        (tmp_path / "m" / "3" / "model.onnx").write_bytes(b"a broken upload")
        wait_for(lambda: "still serving" in str(httpx.post(f"{running.url}/v2/repository/index").json()))
        wait_for(lambda: answers[2.0] > before + 50)  # version 2 kept answering
        index = {e["version"]: e for e in httpx.post(f"{running.url}/v2/repository/index").json()}
        assert index["2"]["state"] == "READY" and "version 3" in index["2"]["reason"]
        assert index["3"]["state"] == "UNAVAILABLE"
    finally:
        stop.set()
        for c in clients:
            c.join()
        running.stop()
    assert errors == []
    assert set(answers) == {1.0, 2.0}
