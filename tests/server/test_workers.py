"""``serve --workers N``: several processes answer on one port, /metrics adds them up, SIGTERM drains
them all, a killed worker is replaced; and the pure parts (plan, back-off, metric merge)."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import pytest
import tritonclient.grpc as grpcclient
from prometheus_client.parser import text_string_to_metric_families

from leanserve.errors import UsageError
from leanserve.server.metrics_merge import merge_expositions, render_merged
from leanserve.server.siblings import read_exposition
from leanserve.server.workers import WORKER_DIR_ENV, plan_workers, replaceable, restart_delay
from tests.fixtures.onnx_models import write_mlp
from tests.server.test_shutdown import write_slow_model
from tests.support import free_port, wait_until_ready

BODY = {"inputs": [{"name": "x", "datatype": "FP32", "shape": [1, 4], "data": [1.0, 2.0, 3.0, 4.0]}]}


# ---- policy -------------------------------------------------------------------------------------


def test_the_budget_and_the_cores_are_divided_between_workers() -> None:
    plan = plan_workers(4, cpus=16, memory_budget=8 << 30)
    assert (plan.count, plan.memory_budget, plan.engine_threads) == (4, 2 << 30, 4)
    assert plan_workers("auto", cpus=6, memory_budget=None).count == 6
    assert plan_workers(8, cpus=2, memory_budget=None).engine_threads == 1  # never 0: that would mean all cores
    with pytest.raises(UsageError):
        plan_workers(0, cpus=2, memory_budget=None)


def test_a_worker_that_keeps_dying_is_replaced_ever_more_slowly() -> None:
    delays = [restart_delay(n) for n in range(1, 10)]
    assert delays[0] == 0.0 and delays == sorted(delays) and delays[-1] == 10.0


def test_a_worker_killed_while_loading_is_replaced_one_that_failed_to_start_stops_the_server() -> None:
    assert replaceable(was_ready=True, exitcode=1)  # it served: whatever ended it, replace it
    assert replaceable(was_ready=False, exitcode=-9)  # SIGKILL (the OOM killer) while it loaded
    assert not replaceable(was_ready=False, exitcode=1)  # its start-up failed: a replacement would too


def test_counters_add_up_and_readiness_needs_every_worker() -> None:
    a = (
        "# TYPE leanserve_requests_total counter\n"
        'leanserve_requests_total{model="m",version="1",outcome="success"} 3\n'
        "# TYPE leanserve_model_ready gauge\n"
        'leanserve_model_ready{model="m",version="1"} 1\n'
        "# TYPE leanserve_request_duration_seconds histogram\n"
        'leanserve_request_duration_seconds_bucket{model="m",version="1",le="0.1"} 2\n'
        'leanserve_request_duration_seconds_bucket{model="m",version="1",le="+Inf"} 3\n'
        'leanserve_request_duration_seconds_count{model="m",version="1"} 3\n'
        'leanserve_request_duration_seconds_sum{model="m",version="1"} 0.5\n'
    )
    b = a.replace("} 3\n", "} 4\n").replace('"1"} 1\n', '"1"} 0\n').replace("} 0.5", "} 0.25")
    samples = {(s.name, s.labels.get("le")): s.value for f in merge_expositions([a, b]) for s in f.samples}
    assert samples[("leanserve_requests_total", None)] == 7
    assert samples[("leanserve_model_ready", None)] == 0  # one worker not ready: not ready
    assert samples[("leanserve_request_duration_seconds_bucket", "+Inf")] == 7
    assert samples[("leanserve_request_duration_seconds_sum", None)] == 0.75
    text = render_merged([a, b], 2).decode()
    assert _metric(text, "leanserve_workers_scraped") == 2 and _metric(text, "leanserve_requests_total") == 7


# ---- processes ----------------------------------------------------------------------------------


def _children(pid: int) -> set[int]:
    """The worker processes of a supervisor (multiprocessing's spawned interpreters)."""
    found: set[int] = set()
    for task in Path(f"/proc/{pid}/task").iterdir():
        for child in (task / "children").read_text().split():
            cmdline = Path(f"/proc/{child}/cmdline").read_bytes()
            if b"spawn_main" in cmdline:
                found.add(int(child))
    return found


def _metric(text: str, name: str, **labels: str) -> float:
    total = 0.0
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            if s.name == name and all(s.labels.get(k) == v for k, v in labels.items()):
                total += s.value
    return total


class Served:
    def __init__(self, proc: subprocess.Popen[bytes], url: str, grpc: str, sockets: Path, log: Path) -> None:
        self.proc, self.url, self.grpc, self.sockets, self.log = proc, url, grpc, sockets, log

    def output(self) -> str:
        """What the supervisor and its workers logged, for a failing assertion."""
        return self.log.read_text(errors="replace")[-4000:]

    def worker_texts(self) -> list[str]:
        paths = sorted(self.sockets.glob("*.sock"))
        return [asyncio.run(read_exposition(p)) for p in paths]

    def wait_for_workers(self, count: int, timeout: float = 90.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                text = httpx.get(f"{self.url}/metrics", timeout=5).text
                ready = [_metric(text, "leanserve_model_ready", model=m) for m in ("mlp", "slow")]
                if _metric(text, "leanserve_workers_scraped") == count and ready == [1, 1]:
                    return
            except httpx.TransportError:
                pass
            time.sleep(0.2)
        raise TimeoutError(f"{count} workers not serving after {timeout}s")


@pytest.fixture
def two_workers(tmp_path: Path) -> Iterator[Served]:
    repo = tmp_path / "models"
    write_mlp(repo / "mlp" / "1" / "model.onnx")
    write_slow_model(repo / "slow" / "1" / "model.onnx")
    # Shedding off: the drain test keeps six 64-row requests queued on purpose, a standing queue
    # the default controlled delay (admission.py) would rightly shed before they were all in flight.
    (repo / "slow" / "model.toml").write_text("max_batch_size = 64\n[dynamic_batching]\noverload_wait_ms = 0\n")
    port, grpc_port = free_port(), free_port()
    sockets = Path(os.environ.get("TMPDIR", "/tmp")) / f"leanserve-test-{os.getpid()}-{port}"
    env = {**os.environ, WORKER_DIR_ENV: str(sockets)}
    log = tmp_path / "server.log"
    command = ["serve", str(repo), "--port", str(port), "--workers", "2", "--grpc-port", str(grpc_port)]
    with log.open("wb") as out:  # a file, not a pipe: nobody reads a pipe while the test runs
        proc = subprocess.Popen(
            [sys.executable, "-m", "leanserve", *command],
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    served = Served(proc, f"http://127.0.0.1:{port}", f"127.0.0.1:{grpc_port}", sockets, log)
    try:
        wait_until_ready(served.url, timeout=90)
        served.wait_for_workers(2)
        yield served
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(60)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


@pytest.mark.slow
def test_both_workers_answer_and_metrics_add_up(two_workers: Served) -> None:
    for _ in range(40):  # a fresh connection each: the kernel picks a worker per connection
        with httpx.Client() as client:
            r = client.post(f"{two_workers.url}/v2/models/mlp/infer", json=BODY, timeout=10)
            assert r.status_code == 200
    for _ in range(8):  # gRPC too: every worker listens on the gRPC port as well
        client = grpcclient.InferenceServerClient(two_workers.grpc)
        x = grpcclient.InferInput("x", [1, 4], "FP32")
        x.set_data_from_numpy(np.array([[1.0, 2.0, 3.0, 4.0]], np.float32))
        assert client.infer("mlp", [x]).as_numpy("y").shape == (1, 3)
        client.close()
    per_worker = [
        _metric(t, "leanserve_requests_total", model="mlp", outcome="success") for t in two_workers.worker_texts()
    ]
    assert len(per_worker) == 2 and all(n > 0 for n in per_worker), per_worker
    merged = httpx.get(f"{two_workers.url}/metrics", timeout=10).text
    assert _metric(merged, "leanserve_requests_total", model="mlp", outcome="success") == sum(per_worker) == 48
    assert _metric(merged, "leanserve_workers_scraped") == 2
    assert len(_children(two_workers.proc.pid)) == 2


@pytest.mark.slow
def test_a_killed_worker_is_replaced(two_workers: Served) -> None:
    before = _children(two_workers.proc.pid)
    victim = min(before)
    os.kill(victim, signal.SIGKILL)
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:
        now = _children(two_workers.proc.pid)
        if len(now) == 2 and victim not in now:
            break
        time.sleep(0.2)
    else:
        now = _children(two_workers.proc.pid)
        raise AssertionError(f"worker {victim} was not replaced: {now}\n{two_workers.output()}")
    two_workers.wait_for_workers(2)
    for _ in range(10):
        with httpx.Client() as client:
            assert client.post(f"{two_workers.url}/v2/models/mlp/infer", json=BODY, timeout=10).status_code == 200
    assert two_workers.proc.poll() is None


@pytest.mark.slow
def test_sigterm_drains_every_worker_and_exits_zero(two_workers: Served) -> None:
    x = np.ones((64, 1024), np.float32)  # about a second of engine time each: none done before all six are in
    body = {"inputs": [{"name": "x", "datatype": "FP32", "shape": [64, 1024], "data": x.ravel().tolist()}]}
    statuses: list[int] = []

    def call() -> None:
        with httpx.Client() as client:  # its own connection: the requests land on both workers
            statuses.append(client.post(f"{two_workers.url}/v2/models/slow/infer", json=body, timeout=120).status_code)

    threads = [threading.Thread(target=call) for _ in range(6)]
    for t in threads:
        t.start()
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:  # every request accepted and in flight (one still queued would be reset)
        merged = httpx.get(f"{two_workers.url}/metrics", timeout=10).text
        if _metric(merged, "leanserve_in_flight_requests", model="slow") == 6:
            break
        assert not statuses, f"a request was answered before the signal: {statuses}\n{two_workers.output()}"
        time.sleep(0.05)
    else:
        raise AssertionError(f"the requests never were all in flight\n{two_workers.output()}")
    workers = _children(two_workers.proc.pid)
    two_workers.proc.send_signal(signal.SIGTERM)
    for t in threads:
        t.join(120)
    assert two_workers.proc.wait(120) == 0
    assert statuses == [200] * 6
    assert not any(Path(f"/proc/{pid}").exists() for pid in workers)
    with pytest.raises(httpx.TransportError):
        httpx.get(f"{two_workers.url}/v2/health/live", timeout=2)


# ---- the stores the workers share ----------------------------------------------------------------


def _write_failures(path: str, worker: int, count: int) -> None:
    from leanserve.errors import InvalidInput
    from leanserve.failures import FailureLog
    from leanserve.router import RequestContext

    log = FailureLog(Path(path), 100_000, flush_seconds=0.001, flush_entries=8)
    log.open()
    for i in range(count):
        log.record(RequestContext(f"w{worker}-{i}"), "mlp", "1", InvalidInput("bad"))
        if i % 16 == 0:
            time.sleep(0.001)  # let the writer commit while the other process does too
    log.close()


def _write_outcomes(path: str, count: int) -> None:
    from leanserve.experiments.store import SqliteStore

    with SqliteStore(path, "ab", flush_interval_s=0.001, flush_records=8) as store:
        for i in range(count):
            store.record_outcome(i % 2, 0, 0.001, ok=True)


@pytest.mark.slow
def test_several_worker_processes_write_one_failure_log_and_one_experiment_store(tmp_path: Path) -> None:
    import multiprocessing

    from leanserve.experiments.records import REQUESTS
    from leanserve.experiments.store import SqliteStore
    from leanserve.failures import FailureLog

    ctx = multiprocessing.get_context("spawn")
    failures, records = tmp_path / "failures.sqlite3", tmp_path / "experiments.sqlite3"
    procs = [ctx.Process(target=_write_failures, args=(str(failures), w, 500)) for w in range(3)]
    procs += [ctx.Process(target=_write_outcomes, args=(str(records), 1000)) for _ in range(3)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(120)
        assert p.exitcode == 0
    log = FailureLog(failures)
    log.open()
    try:
        assert log.count() == 1500  # every process's failures, none lost to a busy file
    finally:
        log.close()
    with SqliteStore(records, "ab") as store:
        tally = store.snapshot().tally
        assert tally.count(REQUESTS, 0) == tally.count(REQUESTS, 1) == 1500  # the counts add up
