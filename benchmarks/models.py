"""Many models in one memory budget: cold and warm requests, a Zipf workload over twelve models, churn.

    make bench-models               # or: .venv/bin/python benchmarks/models.py [--duration 20] [--skip-ray]

Side by side in one run, every server its own process:

1. Cold first request (the process is up, the model loads on demand) and warm p50 for the demo's
   digits and minilm.
2. Twelve generated MLPs (~34 MB of weights each, each answering a different output) under a memory
   budget that holds four of them (4.5x one model's measured size), requested by a Zipf law (s = 1.1,
   fixed seed) from a closed-loop client at concurrency 8; beside the same load with every model
   resident and no budget. The server's resident set is sampled from outside every 50 ms.
3. Ray Serve's ``@serve.multiplexed(max_num_models_per_replica=4)`` on the same models and load, from
   its own virtual environment (benchmarks/.venv-ray, installed on first use), when it installs.
4. A small resident model's p99 under steady load, without and with other models loaded and
   unloaded in a loop through the control API.

Results are printed as tables with PASS/MISS lines and written to benchmarks/out/models.json.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import http.client
import itertools
import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import orjson
from onnx import TensorProto, helper, numpy_helper
from prometheus_client.parser import text_string_to_metric_families
from serving import SENTENCE, environment, free_port, v2_body, write_tiny_mlp

from leanserve import timing
from leanserve.client import RepositoryClient
from leanserve.demo import build_demo_repository, tokenize
from leanserve.demo.build import digits_example
from leanserve.memory import format_size, resident_bytes
from leanserve.repository import scan_model

HERE = Path(__file__).resolve().parent
PY = sys.executable
LEANSERVE = str(Path(PY).with_name("leanserve"))
TOKEN = "bench-models"
RAY_VENV = HERE / ".venv-ray"
RAY_INSTALL_SECONDS = 300.0

MODELS = 12
RESIDENT_MODELS = 4  # what the budget is sized to hold
BUDGET_FACTOR = 4.5  # budget = this x one model's measured size
ZIPF_S = 1.1
SEED = 20261130
CONCURRENCY = 8
HIDDEN = 2048  # 64 -> 2048 -> 2048 -> 2048 -> 16: 8.55M parameters, 34 MB of FP32 weights
IN_DIM, OUT_DIM = 64, 16
WARM_REQUESTS = 200
CHURN_MODELS = 3
CHURN_CONCURRENCY = 4


# ---- models ----------------------------------------------------------------------------------


def write_wide_mlp(path: Path, index: int, probe: np.ndarray) -> np.ndarray:
    """An MLP whose weights make it ~34 MB; returns its output for ``probe``, computed in numpy.

    The last bias is ``10 * index``, so each model's answer is far from every other's and a request
    answered by the wrong model is caught.
    """
    rng = np.random.default_rng(SEED + index)
    dims = [IN_DIM, HIDDEN, HIDDEN, HIDDEN, OUT_DIM]
    nodes, inits = [], []
    h, prev = probe.astype(np.float32), "x"
    for i, (a, b) in enumerate(itertools.pairwise(dims)):
        w = (rng.standard_normal((a, b), dtype=np.float32) / np.float32(np.sqrt(a))).astype(np.float32)
        last = i == len(dims) - 2
        bias = np.full(b, 10.0 * index if last else 0.0, np.float32)
        inits += [numpy_helper.from_array(w, f"w{i}"), numpy_helper.from_array(bias, f"b{i}")]
        nodes.append(helper.make_node("MatMul", [prev, f"w{i}"], [f"m{i}"]))
        out = "y" if last else f"h{i}"
        nodes.append(helper.make_node("Add", [f"m{i}", f"b{i}"], [out if last else f"a{i}"]))
        h = h @ w + bias
        if not last:
            nodes.append(helper.make_node("Relu", [f"a{i}"], [out]))
            h = np.maximum(h, 0)
        prev = out
    graph = helper.make_graph(
        nodes,
        f"wide_mlp_{index}",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", IN_DIM])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", OUT_DIM])],
        inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    path.parent.mkdir(parents=True, exist_ok=True)
    onnx.save(model, path)
    return h


@dataclass(frozen=True)
class Fleet:
    """The twelve models on disk, the one input every request sends, and each model's answer to it."""

    repo: Path
    names: tuple[str, ...]  # in Zipf rank order: names[0] is the most requested
    body: bytes
    expected: Mapping[str, np.ndarray]


def write_fleet(repo: Path) -> Fleet:
    probe = np.random.default_rng(SEED).standard_normal((1, IN_DIM), dtype=np.float32)
    names = tuple(f"mlp{i:02d}" for i in range(1, MODELS + 1))
    expected = {}
    for i, name in enumerate(names, start=1):
        expected[name] = write_wide_mlp(repo / name / "1" / "model.onnx", i, probe)
        # No load key: the server's --load decides, so one repository serves both runs.
        (repo / name / "model.toml").write_text("[runtime]\nintra_op_threads = 1\n")
    return Fleet(repo, names, v2_body({"x": probe}), expected)


def zipf_sequence(names: tuple[str, ...], count: int) -> list[str]:
    """``count`` model names drawn from a Zipf law over ``names`` (rank 1 first), fixed seed."""
    weights = np.arange(1, len(names) + 1, dtype=np.float64) ** -ZIPF_S
    draws = np.random.default_rng(SEED).choice(len(names), size=count, p=weights / weights.sum())
    return [names[i] for i in draws]


def answer_matches(payload: bytes, expected: np.ndarray) -> bool:
    try:
        outputs = orjson.loads(payload)["outputs"]
        got = np.asarray(outputs[0]["data"], np.float32)
    except (ValueError, KeyError, IndexError, TypeError):
        return False
    return got.shape == expected.ravel().shape and bool(np.allclose(got, expected.ravel(), rtol=1e-3, atol=1e-3))


# ---- processes -------------------------------------------------------------------------------


@dataclass
class Process:
    proc: subprocess.Popen[bytes]
    port: int
    log: Path

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def log_tail(self, chars: int = 2000) -> str:
        try:
            return self.log.read_text(errors="replace")[-chars:]
        except OSError:
            return ""


@contextmanager
def running(cmd: list[str], port: int, ready: Callable[[Process], bool], timeout: float = 180.0) -> Iterator[Process]:
    """Start ``cmd``; yield once ``ready``; after, stop it and wait until every process it started is gone."""
    log = Path(tempfile.mkstemp(prefix="bench-models-", suffix=".log")[1])
    # Output to a file, not a pipe: a chatty server must never block on a full pipe mid-run.
    with log.open("wb") as sink:
        proc = subprocess.Popen(cmd, stdout=sink, stderr=subprocess.STDOUT, start_new_session=True)
    p = Process(proc, port, log)
    try:
        end = time.monotonic() + timeout
        while not ready(p):
            if proc.poll() is not None:
                raise RuntimeError(f"{' '.join(cmd[:3])} exited with {proc.returncode}:\n{p.log_tail()}")
            if time.monotonic() > end:
                raise RuntimeError(f"{' '.join(cmd[:3])} not ready within {timeout:.0f} s:\n{p.log_tail()}")
            time.sleep(0.05)
        yield p
    finally:
        stop(proc)
        log.unlink(missing_ok=True)


def stop(proc: subprocess.Popen[bytes], grace: float = 60.0) -> None:
    """SIGTERM to ``proc`` alone, so it stops its own children (Ray's do); then any left, by id.

    Ray's actors outlive its driver by seconds: the next measurement waits for them, else they
    would take CPU from it.
    """
    tree = [pid for pid in descendants(proc.pid) if pid != proc.pid]
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=grace)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    end = time.monotonic() + grace / 2
    while (left := [pid for pid in tree if Path(f"/proc/{pid}").exists()]) and time.monotonic() < end:
        time.sleep(0.2)
    for pid in left:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, 9)


def http_status(url: str, method: str = "GET", body: bytes | None = None, timeout: float = 2.0) -> int:
    host, _, rest = url.removeprefix("http://").partition("/")
    conn = http.client.HTTPConnection(host, timeout=timeout)
    try:
        conn.request(method, "/" + rest, body)
        return conn.getresponse().status
    except OSError:
        return 0
    finally:
        conn.close()


@contextmanager
def leanserve(repo: Path, *args: str) -> Iterator[Process]:
    port = free_port()
    cmd = [LEANSERVE, "serve", str(repo), "--port", str(port), "--admin-token", TOKEN, "--log-level", "warning"]
    with running([*cmd, *args], port, lambda p: http_status(p.base + "/v2/health/ready") == 200) as p:
        yield p


def scrape(base: str) -> dict[str, float]:
    """leanserve's /metrics, each sample summed over its labels; unloads also by reason."""
    conn = http.client.HTTPConnection(base.removeprefix("http://"), timeout=10)
    try:
        conn.request("GET", "/metrics")
        text = conn.getresponse().read().decode()
    finally:
        conn.close()
    totals: dict[str, float] = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            totals[s.name] = totals.get(s.name, 0.0) + s.value
            if s.name == "leanserve_model_unloads_total":
                key = f"{s.name}:{s.labels['reason']}"
                totals[key] = totals.get(key, 0.0) + s.value
    return totals


def descendants(pid: int) -> list[int]:
    """``pid`` and every process below it, from /proc."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                # The command name (field 2) may hold spaces and parentheses: split after its last ')'.
                ppid = int((entry / "stat").read_text().rpartition(")")[2].split()[1])
            except (OSError, ValueError, IndexError):
                continue
            children.setdefault(ppid, []).append(int(entry.name))
    found, todo = [], [pid]
    while todo:
        p = todo.pop()
        found.append(p)
        todo.extend(children.get(p, ()))
    return found


class RssSampler:
    """The resident set of some processes, read from outside every 50 ms; keeps the maximum."""

    def __init__(self, pids: Callable[[], list[int]], every: float = 0.05) -> None:
        self._pids = pids
        self._every = every
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self.max_bytes = 0
        self.samples = 0

    def __enter__(self) -> RssSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    def _run(self) -> None:
        pids = self._pids()
        while not self._stop.is_set():
            if self.samples % 20 == 0:  # once a second: processes come and go (Ray's workers)
                pids = self._pids()
            self.max_bytes = max(self.max_bytes, sum(resident_bytes(p) for p in pids))
            self.samples += 1
            self._stop.wait(self._every)


# ---- load ------------------------------------------------------------------------------------


@dataclass
class LoadResult:
    requests: int
    errors: int
    wrong: int
    seconds: float
    p50_ms: float
    p99_ms: float
    first_error: str = ""

    @property
    def per_second(self) -> float:
        return self.requests / self.seconds if self.seconds else 0.0


def percentiles(latencies: list[float]) -> tuple[float, float]:
    if not latencies:
        return float("nan"), float("nan")
    p50, p99 = timing.percentiles(np.asarray(latencies) * 1e3, (50, 99))
    return p50, p99


Target = Callable[[str], tuple[str, dict[str, str]]]  # model name -> (url, headers)


def closed_loop(
    target: Target,
    body: bytes,
    sequence: list[str],
    expected: Mapping[str, np.ndarray],
    concurrency: int,
    seconds: float,
    on_answer: Callable[[bytes], None] | None = None,
) -> LoadResult:
    """``concurrency`` clients, each sending its next request when the last is answered, for ``seconds``.

    Requests name models in ``sequence`` order (shared by the clients); every answer is checked
    against ``expected``.
    """
    return asyncio.run(_closed_loop(target, body, sequence, expected, concurrency, seconds, on_answer))


async def _closed_loop(
    target: Target,
    body: bytes,
    sequence: list[str],
    expected: Mapping[str, np.ndarray],
    concurrency: int,
    seconds: float,
    on_answer: Callable[[bytes], None] | None,
) -> LoadResult:
    import aiohttp

    counter = itertools.count()
    latencies: list[float] = []
    errors = wrong = unanswered = 0
    first_error = ""
    headers = {"Content-Type": "application/json"}
    start = time.perf_counter()
    end = start + seconds

    async def client(http: aiohttp.ClientSession) -> None:
        nonlocal errors, wrong, unanswered, first_error
        while time.perf_counter() < end:
            name = sequence[next(counter) % len(sequence)]
            url, extra = target(name)
            t = time.perf_counter()
            try:
                async with http.post(url, data=body, headers=headers | extra) as r:
                    payload, status = await r.read(), r.status
            except (aiohttp.ClientError, TimeoutError) as e:
                errors += 1
                unanswered += 1
                first_error = first_error or f"{type(e).__name__}: {e}"
                continue
            latencies.append(time.perf_counter() - t)
            if status != 200:
                errors += 1
                first_error = first_error or f"{status}: {payload[:300].decode(errors='replace')}"
            elif not answer_matches(payload, expected[name]):
                wrong += 1
                first_error = first_error or f"wrong answer from {name}: {payload[:300].decode(errors='replace')}"
            elif on_answer is not None:
                on_answer(payload)

    timeout = aiohttp.ClientTimeout(total=120)
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=concurrency), timeout=timeout) as http:
        await asyncio.gather(*(client(http) for _ in range(concurrency)))
    elapsed = time.perf_counter() - start
    p50, p99 = percentiles(latencies)
    return LoadResult(len(latencies) + unanswered, errors, wrong, elapsed, p50, p99, first_error)


def sequential(base: str, path: str, body: bytes, count: int) -> tuple[list[float], bytes]:
    """``count`` requests one after another on one keep-alive connection: their seconds, the last answer."""
    conn = http.client.HTTPConnection(base.removeprefix("http://"), timeout=300)
    seconds, payload = [], b""
    try:
        for _ in range(count):
            t = time.perf_counter()
            conn.request("POST", path, body, {"Content-Type": "application/json"})
            response = conn.getresponse()
            payload = response.read()
            seconds.append(time.perf_counter() - t)
            if response.status != 200:
                raise RuntimeError(f"POST {path}: {response.status} {payload[:500]!r}")
    finally:
        conn.close()
    return seconds, payload


# ---- 1. cold and warm ------------------------------------------------------------------------


def demo_inputs(demo: Path) -> dict[str, dict[str, np.ndarray]]:
    # minilm padded to 128 tokens, as benchmarks/serving.py measures it.
    tokens = {k: np.pad(v, ((0, 0), (0, 128 - v.shape[1]))) for k, v in tokenize([SENTENCE]).items()}
    return {"digits": {"image": digits_example(demo).image}, "minilm": tokens}


def cold_and_warm(tmp: Path) -> list[dict[str, object]]:
    demo = build_demo_repository(progress=lambda m: print(f"  {m}", flush=True))
    repo = tmp / "demo-on-demand"
    feeds = demo_inputs(demo)
    references = {}
    for name in feeds:
        entry = scan_model(demo / name)
        if entry.config is None:
            raise RuntimeError(f"demo model {name}: {entry.error}")
        version = entry.config.default_version or max(entry.versions)
        source = demo / name / str(version) / "model.onnx"
        (repo / name / "1").mkdir(parents=True)
        shutil.copy(source, repo / name / "1" / "model.onnx")
        # The demo's own configuration (threads, batching), loaded on demand.
        config = (demo / name / "model.toml").read_text()
        (repo / name / "model.toml").write_text(f'load = "on_demand"\n{config}')
        session = ort.InferenceSession(str(source), providers=["CPUExecutionProvider"])
        references[name] = session.run(None, feeds[name])[0]
        del session
    rows: list[dict[str, object]] = []
    with leanserve(repo) as server:
        idle = resident_bytes(server.proc.pid)
        for name, feed in feeds.items():
            body, path = v2_body(feed), f"/v2/models/{name}/infer"
            cold, _ = sequential(server.base, path, body, 1)
            warm, payload = sequential(server.base, path, body, WARM_REQUESTS)
            p50, p99 = percentiles(warm)
            rows.append(
                {
                    "model": name,
                    "cold_ms": cold[0] * 1e3,
                    "warm_p50_ms": p50,
                    "warm_p99_ms": p99,
                    "warm_requests": len(warm),
                    "answer_ok": answer_matches(payload, references[name]),
                }
            )
        index = RepositoryClient(server.base, TOKEN).index()
        sizes = {e["name"]: int(e["memory_bytes"]) for e in index}
        for row in rows:
            row["memory_bytes"] = sizes.get(str(row["model"]), 0)
        rows.append({"model": "(idle process)", "rss_bytes": idle})
    return rows


# ---- 2. twelve models under a budget ---------------------------------------------------------


def measured_sizes(fleet: Fleet, count: int = 3) -> list[int]:
    """Models' sizes as the server measures them: load ``count`` in a fresh on-demand server, read the index.

    More than one, because the first load in a process can carry one-time costs (seen: 39.6 MiB
    once where every later load measured 33.3); the budget is sized on their median.
    """
    names = fleet.names[:count]
    with leanserve(fleet.repo, "--load", "on_demand") as server:
        for name in names:
            sequential(server.base, f"/v2/models/{name}/infer", fleet.body, 1)
        index = RepositoryClient(server.base, TOKEN).index()
    return [next(int(e["memory_bytes"]) for e in index if e["name"] == name) for name in names]


def zipf_run(fleet: Fleet, label: str, seconds: float, *args: str) -> dict[str, object]:
    sequence = zipf_sequence(fleet.names, 200_000)
    with leanserve(fleet.repo, *args) as server:
        idle = resident_bytes(server.proc.pid)
        before = scrape(server.base)
        with RssSampler(lambda: [server.proc.pid]) as rss:
            load = closed_loop(
                lambda name: (f"{server.base}/v2/models/{name}/infer", {}),
                fleet.body,
                sequence,
                fleet.expected,
                CONCURRENCY,
                seconds,
            )
        after = scrape(server.base)
        log = server.log_tail()
    delta = {k: after.get(k, 0.0) - before.get(k, 0.0) for k in after}
    loads = delta.get("leanserve_model_loads_total", 0.0)
    requests = delta.get("leanserve_requests_total", 0.0)
    return {
        "server": label,
        "args": list(args),
        "load": asdict(load),
        "requests_per_s": load.per_second,
        "loads": loads,
        "loads_per_s": loads / load.seconds,
        "hit_ratio": 1 - loads / requests if requests else float("nan"),
        "evictions": delta.get("leanserve_evictions_total", 0.0),
        "unloads_evicted": delta.get("leanserve_model_unloads_total:evicted", 0.0),
        "idle_rss_bytes": idle,
        "baseline_bytes": after.get("leanserve_memory_baseline_bytes", 0.0),
        "budget_bytes": after.get("leanserve_memory_budget_bytes"),
        "used_bytes_at_end": after.get("leanserve_memory_used_bytes", 0.0),
        "max_rss_bytes": rss.max_bytes,
        "rss_samples": rss.samples,
        "server_log_tail": log,
    }


# ---- 3. Ray Serve ----------------------------------------------------------------------------


def ray_python() -> tuple[Path | None, str]:
    """The Ray venv's interpreter, installing it on first use; else None and why."""
    python = RAY_VENV / "bin" / "python"
    stamp = RAY_VENV / ".installed"
    if stamp.exists():
        return python, ""
    print(f"  installing ray[serve] into {RAY_VENV} (once; up to {RAY_INSTALL_SECONDS:.0f} s) ...", flush=True)
    start = time.monotonic()
    try:
        subprocess.run([PY, "-m", "venv", "--clear", str(RAY_VENV)], check=True, capture_output=True)
        # Ignored by git and by ruff wherever the repository's .gitignore does not say so.
        (RAY_VENV / ".gitignore").write_text("*\n")
        subprocess.run(
            [str(python), "-m", "pip", "install", "-q", "ray[serve]", "onnxruntime", "numpy"],
            check=True,
            capture_output=True,
            text=True,
            timeout=RAY_INSTALL_SECONDS,
        )
    except subprocess.TimeoutExpired:
        return None, f"pip install 'ray[serve]' took more than {RAY_INSTALL_SECONDS:.0f} s"
    except subprocess.CalledProcessError as e:
        return None, f"pip install 'ray[serve]' failed: {(e.stderr or '').strip()[-500:]}"
    torch = subprocess.run([str(python), "-c", "import torch"], capture_output=True)
    if torch.returncode == 0:
        return None, "ray[serve] pulled torch into its venv; not run (the brief forbids a CUDA torch)"
    stamp.write_text(f"installed in {time.monotonic() - start:.0f} s\n")
    return python, ""


def ray_run(fleet: Fleet, seconds: float) -> dict[str, object]:
    python, why = ray_python()
    if python is None:
        return {"server": "ray serve multiplexed", "not_run": why}
    version = subprocess.run(
        [str(python), "-c", "import ray; print(ray.__version__)"], capture_output=True, text=True
    ).stdout.strip()
    port = free_port()
    cmd = [str(python), str(HERE / "peers" / "ray_multiplex.py"), str(fleet.repo), str(port), str(RESIDENT_MODELS)]
    probe_model = fleet.names[-1]  # the least requested: the run reuses its start-up load least
    sequence = zipf_sequence(fleet.names, 200_000)
    loads_seen = [0.0]

    def on_answer(payload: bytes) -> None:
        loads_seen[0] = max(loads_seen[0], float(orjson.loads(payload).get("parameters", {}).get("loads", 0)))

    env_started = time.monotonic()
    with running(cmd, port, lambda p: _ray_ready(p, probe_model, fleet.body), timeout=240) as server:
        start_seconds = time.monotonic() - env_started
        tree = descendants(server.proc.pid)
        idle = sum(resident_bytes(p) for p in tree)
        replica = _ray_replica(server.proc.pid)
        idle_replica = resident_bytes(replica) if replica else 0
        loads_before = _ray_loads(server.base, probe_model, fleet.body)
        with (
            RssSampler(lambda: descendants(server.proc.pid)) as rss_tree,
            RssSampler(lambda: [r] if (r := _ray_replica(server.proc.pid)) else []) as rss_replica,
        ):
            load = closed_loop(
                lambda name: (f"{server.base}/", {"serve_multiplexed_model_id": name}),
                fleet.body,
                sequence,
                fleet.expected,
                CONCURRENCY,
                seconds,
                on_answer,
            )
        log = server.log_tail()
    loads = loads_seen[0] - loads_before
    return {
        "server": f"ray serve {version} multiplexed ({RESIDENT_MODELS} per replica)",
        "load": asdict(load),
        "requests_per_s": load.per_second,
        "loads": loads,
        "loads_per_s": loads / load.seconds,
        "hit_ratio": 1 - loads / load.requests if load.requests else float("nan"),
        "start_seconds": start_seconds,
        "idle_rss_bytes": idle,
        "idle_replica_rss_bytes": idle_replica,
        "max_rss_bytes": rss_tree.max_bytes,
        "max_replica_rss_bytes": rss_replica.max_bytes,
        "server_log_tail": log,
    }


def _ray_ready(p: Process, model: str, body: bytes) -> bool:
    try:
        _ray_loads(p.base, model, body)
    except (OSError, RuntimeError, ValueError):
        return False
    return True


def _ray_loads(base: str, model: str, body: bytes) -> float:
    """The replica's load count so far, read from the parameters of one answer."""
    conn = http.client.HTTPConnection(base.removeprefix("http://"), timeout=60)
    try:
        conn.request("POST", "/", body, {"Content-Type": "application/json", "serve_multiplexed_model_id": model})
        response = conn.getresponse()
        payload = response.read()
    finally:
        conn.close()
    if response.status != 200:
        raise RuntimeError(f"{response.status}: {payload[:200]!r}")
    return float(orjson.loads(payload)["parameters"]["loads"])


def _ray_replica(root: int) -> int | None:
    for pid in descendants(root):
        try:
            if b"ServeReplica" in Path(f"/proc/{pid}/cmdline").read_bytes():
                return pid
        except OSError:
            continue
    return None


# ---- 4. a resident model under churn ----------------------------------------------------------


def churn_run(fleet: Fleet, tmp: Path, seconds: float) -> dict[str, object]:
    repo = tmp / "churn"
    write_tiny_mlp(repo / "tiny" / "1" / "model.onnx")
    (repo / "tiny" / "model.toml").write_text('load = "always"\n[runtime]\nintra_op_threads = 1\n')
    others = fleet.names[-CHURN_MODELS:]
    for name in others:
        shutil.copytree(fleet.repo / name, repo / name)
    x = np.random.default_rng(SEED).standard_normal((1, IN_DIM), dtype=np.float32)
    session = ort.InferenceSession(str(repo / "tiny" / "1" / "model.onnx"), providers=["CPUExecutionProvider"])
    expected = {"tiny": session.run(None, {"x": x})[0]}
    del session
    body = v2_body({"x": x})
    phases: dict[str, object] = {}
    with leanserve(repo, "--load", "on_demand") as server:
        url = f"{server.base}/v2/models/tiny/infer"
        closed_loop(lambda _: (url, {}), body, ["tiny"], expected, CHURN_CONCURRENCY, 1.0)  # warm-up
        steady = closed_loop(lambda _: (url, {}), body, ["tiny"], expected, CHURN_CONCURRENCY, seconds)
        phases["steady"] = asdict(steady) | {"requests_per_s": steady.per_second}
        stop = threading.Event()
        cycles: list[float] = []
        failures: list[str] = []

        def churn() -> None:
            client = RepositoryClient(server.base, TOKEN)
            for name in itertools.cycle(others):
                if stop.is_set():
                    return
                t = time.perf_counter()
                try:
                    client.load(name)
                    client.unload(name)
                except Exception as e:  # recorded and reported, the churn goes on
                    failures.append(f"{name}: {type(e).__name__}: {e}")
                cycles.append(time.perf_counter() - t)

        thread = threading.Thread(target=churn, daemon=True)
        thread.start()
        loaded = closed_loop(lambda _: (url, {}), body, ["tiny"], expected, CHURN_CONCURRENCY, seconds)
        stop.set()
        thread.join(timeout=120)
        after = scrape(server.base)
    phases["churn"] = asdict(loaded) | {
        "requests_per_s": loaded.per_second,
        "cycles": len(cycles),
        "cycle_ms_mean": float(np.mean(cycles) * 1e3) if cycles else float("nan"),
        "churn_failures": failures[:5],
        "operator_unloads": after.get("leanserve_model_unloads_total:operator", 0.0),
    }
    return {"models_churned": list(others), "concurrency": CHURN_CONCURRENCY, "phases": phases}


# ---- report ----------------------------------------------------------------------------------


def mib(n: float | None) -> str:
    return "-" if n is None else f"{n / (1 << 20):.0f}"


def print_report(result: dict[str, object]) -> list[str]:
    """Prints the tables; returns the PASS/MISS lines."""
    checks: list[tuple[str, bool]] = []
    print("\n1. Cold first request (process up, model on demand) and warm requests, sequential")
    print(f"{'model':10} {'cold ms':>9} {'warm p50 ms':>12} {'warm p99 ms':>12} {'size MiB':>9} {'answer':>7}")
    cold_rows = result["cold_warm"]
    assert isinstance(cold_rows, list)
    for row in cold_rows:
        if "cold_ms" in row:
            print(
                f"{row['model']:10} {row['cold_ms']:>9.1f} {row['warm_p50_ms']:>12.3f} {row['warm_p99_ms']:>12.3f}"
                f" {mib(row['memory_bytes']):>9} {'ok' if row['answer_ok'] else 'WRONG':>7}"
            )
            checks.append((f"{row['model']} answers match ONNX Runtime in process", bool(row["answer_ok"])))

    zipf = result["zipf"]
    assert isinstance(zipf, dict)
    print(
        f"\n2-3. {MODELS} models of {format_size(int(zipf['model_bytes']))} (measured), Zipf s={ZIPF_S}, "
        f"closed loop at concurrency {CONCURRENCY}, {zipf['seconds']:.0f} s each"
    )
    print(
        f"{'server':44} {'req/s':>7} {'p50 ms':>8} {'p99 ms':>8} {'loads/s':>8} {'hit':>5} {'errors':>6}"
        f" {'wrong':>5} {'max RSS MiB':>11}"
    )
    for run in zipf["runs"]:
        if "not_run" in run:
            print(f"{run['server']:44} not run here: {run['not_run']}")
            continue
        load = run["load"]
        rss = mib(run["max_rss_bytes"])
        if "max_replica_rss_bytes" in run:
            rss = f"{mib(run['max_replica_rss_bytes'])}/{rss}"
        print(
            f"{run['server']:44} {run['requests_per_s']:>7.1f} {load['p50_ms']:>8.2f} {load['p99_ms']:>8.1f}"
            f" {run['loads_per_s']:>8.2f} {run['hit_ratio']:>5.2f} {load['errors']:>6} {load['wrong']:>5}"
            f" {rss:>11}"
        )
        checks.append(
            (f"{run['server']}: every answer from the model asked ({load['wrong']} wrong)", not load["wrong"])
        )
        if load["first_error"]:
            print(f"  first error: {load['first_error']}")
    budgeted = zipf["runs"][0]
    ceiling = budgeted["idle_rss_bytes"] + budgeted["budget_bytes"] + zipf["model_bytes"]
    checks.append(
        (
            f"budget run: no errors ({budgeted['load']['errors']})",
            budgeted["load"]["errors"] == 0,
        )
    )
    checks.append(
        (
            f"budget run max RSS {mib(budgeted['max_rss_bytes'])} MiB <= idle {mib(budgeted['idle_rss_bytes'])}"
            f" + budget {mib(budgeted['budget_bytes'])} + one model {mib(zipf['model_bytes'])}"
            f" = {mib(ceiling)} MiB",
            budgeted["max_rss_bytes"] <= ceiling,
        )
    )
    for run in zipf["runs"]:
        if "max_replica_rss_bytes" in run:
            print(
                f"  Ray: RSS of its replica / of all its processes (raylet, GCS, proxy, controller, replica);"
                f" started in {run['start_seconds']:.0f} s"
            )

    churn = result["churn"]
    assert isinstance(churn, dict)
    phases = churn["phases"]
    print(
        f"\n4. Resident tiny MLP at concurrency {churn['concurrency']}, while {', '.join(churn['models_churned'])}"
        " are loaded and unloaded in a loop"
    )
    print(f"{'phase':8} {'req/s':>8} {'p50 ms':>8} {'p99 ms':>8} {'errors':>6} {'cycles':>7} {'cycle ms':>9}")
    for name, phase in phases.items():
        cycle_ms = f"{phase['cycle_ms_mean']:.0f}" if "cycle_ms_mean" in phase else ""
        print(
            f"{name:8} {phase['requests_per_s']:>8.0f} {phase['p50_ms']:>8.2f} {phase['p99_ms']:>8.2f}"
            f" {phase['errors']:>6} {phase.get('cycles', ''):>7} {cycle_ms:>9}"
        )
    for failure in phases["churn"]["churn_failures"]:
        print(f"  churn failure: {failure}")
    ratio = phases["churn"]["p99_ms"] / phases["steady"]["p99_ms"]
    checks.append(
        (
            f"p99 with churn <= 2x without: {phases['churn']['p99_ms']:.2f} ms vs {phases['steady']['p99_ms']:.2f}"
            f" ms ({ratio:.2f}x)",
            ratio <= 2.0,
        )
    )
    checks.append(
        (
            f"resident model: no errors under churn ({phases['churn']['errors']})",
            phases["churn"]["errors"] == 0 and phases["steady"]["errors"] == 0,
        )
    )
    return [f"  {'PASS' if ok else 'MISS'}  {text}" for text, ok in checks]


def describe_environment() -> dict[str, object]:
    # The machine may be shared: a busy one explains a slow run.
    return environment() | {"load_average_at_start": load_average()}


def load_average() -> str:
    loads = timing.load_average()
    return " ".join(f"{x:.2f}" for x in loads) if loads else "unknown"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--duration", type=float, default=20.0, help="seconds of each Zipf run")
    parser.add_argument("--churn-duration", type=float, default=8.0, help="seconds of each churn phase")
    parser.add_argument("--skip-ray", action="store_true", help="leave Ray Serve out")
    parser.add_argument("--out", type=Path, default=HERE / "out" / "models.json")
    args = parser.parse_args()
    started = time.monotonic()
    result: dict[str, object] = {"environment": describe_environment()}
    with tempfile.TemporaryDirectory(prefix="bench-models-") as tmp_name:
        tmp = Path(tmp_name)
        print("== 1. cold and warm requests, demo models", flush=True)
        result["cold_warm"] = cold_and_warm(tmp)
        print(f"== 2. writing {MODELS} MLPs", flush=True)
        fleet = write_fleet(tmp / "fleet")
        sizes = measured_sizes(fleet)
        size = int(np.median(sizes))
        budget = int(BUDGET_FACTOR * size)
        print(f"  models measure {', '.join(format_size(n) for n in sizes)}: budget {format_size(budget)}", flush=True)
        runs = []
        print("== 2. leanserve under the budget", flush=True)
        runs.append(
            zipf_run(
                fleet,
                f"leanserve, budget {BUDGET_FACTOR:g}x one model",
                args.duration,
                "--load",
                "on_demand",
                "--memory-budget",
                str(budget),
            )
        )
        print("== 2. leanserve, every model resident", flush=True)
        runs.append(zipf_run(fleet, "leanserve, all resident, no budget", args.duration, "--load", "always"))
        if args.skip_ray:
            runs.append({"server": "ray serve multiplexed", "not_run": "--skip-ray"})
        else:
            print("== 3. Ray Serve multiplexing", flush=True)
            try:
                runs.append(ray_run(fleet, args.duration))
            except RuntimeError as e:
                runs.append({"server": "ray serve multiplexed", "not_run": f"failed to start: {str(e)[-500:]}"})
        result["zipf"] = {
            "model_bytes": size,
            "sizes_measured": sizes,
            "budget_bytes": budget,
            "seconds": args.duration,
            "runs": runs,
        }
        print("== 4. resident model under load/unload churn", flush=True)
        result["churn"] = churn_run(fleet, tmp, args.churn_duration)
    checks = print_report(result)
    print("\n".join(checks))
    result["load_average_at_end"] = load_average()
    print(f"\nload average (1, 5, 15 min): {result['load_average_at_end']} at the end of the run")
    result["checks"] = checks
    result["wall_seconds"] = time.monotonic() - started
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=1, default=str))
    print(f"\nwritten to {args.out} ({result['wall_seconds']:.0f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
