"""Every peer server beside leanserve, on the same models, in one run: `make bench-peers`.

    .venv/bin/python benchmarks/peers.py [--duration 8] [--models tiny,digits,minilm] [--peers ...] [--alone]

Each peer is installed into its own virtual environment under benchmarks/.peers/ on first use
(peer_envs.py) and served by the small module of its own under benchmarks/peers/: ONNX Runtime
with the same intra-op threads, one inter-op thread, the same batch limit (32) and batching window
(0 ms: take what is queued; a peer that cannot is said so in its module), each peer's own batching
and one worker. The contenders: ONNX Runtime in process (the ceiling: items/s at batch 1, 8 and 32),
leanserve, FastAPI + uvicorn (no batching), LitServe, BentoML, Ray Serve, MLServer, NVIDIA PyTriton,
TorchServe. Each server is started, its answer checked against ONNX Runtime's, its cold start (process
start to first correct answer) and idle resident memory (summed over its processes) taken, then it
is loaded in closed loop at each concurrency and in open loop at the model's rate.

The load comes from :func:`drive`, the one place that knows the load generator: leanserve's own
(``leanserve.loadgen``, what ``leanserve bench`` runs) where it is installed, else wrk. Each peer's
request (its path and body: BentoML takes ``{"x": ...}``, TorchServe answers at /predictions/<model>)
is encoded once and sent as it is. Results go to benchmarks/out/peers.json, the tables to
benchmarks/out/peers.md and the chart to benchmarks/out/peers.png; RESULTS.md records a run.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort
from peer_envs import ENVS, ensure
from peer_procs import resident_mb, start, stop
from peers_report import Ceiling, Load, PeerRun, chart, markdown, targets
from serving import SENTENCE, environment, free_port, tiny_repository, wrk

HERE = Path(__file__).resolve().parent
PEER_DIR = HERE / "peers"
OUT = HERE / "out"
PY = sys.executable
MAX_BATCH = 32


# ---- models -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Model:
    name: str
    onnx: Path
    threads: int
    feed: dict[str, np.ndarray]  # one item
    output: str  # the output checked against in-process ONNX Runtime
    rate: float  # open loop, requests/s


def build_models(names: list[str], work: Path) -> list[Model]:
    models = []
    if "tiny" in names:
        repo = tiny_repository(work / "tiny-repo")
        x = np.random.default_rng(1).normal(size=(1, 64)).astype(np.float32)
        models.append(Model("tiny", repo / "tiny" / "1" / "model.onnx", 1, {"x": x}, "y", 500.0))
    if "digits" in names or "minilm" in names:
        from leanserve.demo import build_demo_repository, digits_example, tokenize

        demo = build_demo_repository(progress=lambda m: print(m, flush=True))
        if "digits" in names:
            image = digits_example(demo, 0).image.astype(np.float32)
            models.append(Model("digits", demo / "digits" / "1" / "model.onnx", 1, {"image": image}, "logits", 500.0))
        if "minilm" in names:
            # Padded to 128 tokens, as benchmarks/serving.py measures it.
            feed = {k: np.pad(v, ((0, 0), (0, 128 - v.shape[1]))) for k, v in tokenize([SENTENCE]).items()}
            models.append(Model("minilm", demo / "minilm" / "1" / "model.onnx", 2, feed, "embedding", 10.0))
    return models


def ceiling(model: Model, seconds: float = 1.0) -> Ceiling:
    """ONNX Runtime in this process, the peers' engine settings: items/s at batch 1, 8 and 32, p50 at 1."""
    so = ort.SessionOptions()
    so.intra_op_num_threads = model.threads
    so.inter_op_num_threads = 1
    s = ort.InferenceSession(str(model.onnx), so, providers=["CPUExecutionProvider"])
    rates: dict[int, float] = {}
    p50 = 0.0
    for batch in (1, 8, 32):
        feed = {k: np.repeat(v, batch, axis=0) for k, v in model.feed.items()}
        for _ in range(5):
            s.run(None, feed)
        times = []
        end = time.perf_counter() + seconds
        while time.perf_counter() < end:
            t = time.perf_counter()
            s.run(None, feed)
            times.append(time.perf_counter() - t)
        rates[batch] = batch * len(times) / sum(times)
        if batch == 1:
            p50 = float(np.median(times) * 1e3)
    return Ceiling(rates, p50)


# ---- contenders -------------------------------------------------------------------------------


def v2_body(feed: dict[str, np.ndarray]) -> bytes:
    dtypes = {"float32": "FP32", "int64": "INT64"}
    inputs = [
        {"name": k, "datatype": dtypes[str(v.dtype)], "shape": list(v.shape), "data": v.ravel().tolist()}
        for k, v in feed.items()
    ]
    return json.dumps({"inputs": inputs}).encode()


def v2_output(answer: bytes, name: str) -> np.ndarray:
    out = next(o for o in json.loads(answer)["outputs"] if o["name"] == name)
    return np.asarray(out["data"], np.float32)


def stacked_body(feed: dict[str, np.ndarray]) -> bytes:
    """BentoML's batchable API takes one array: the inputs stacked on axis 1 (one input: itself)."""
    arrays = list(feed.values())
    x = arrays[0] if len(arrays) == 1 else np.stack(arrays, axis=1)
    return json.dumps({"x": x.tolist()}).encode()


def stacked_output(model: Model) -> Callable[[bytes, str], np.ndarray]:
    """The output ``name`` of BentoML's answer: the outputs stacked on axis 1 when there are several."""
    names = [o.name for o in ort.InferenceSession(str(model.onnx), providers=["CPUExecutionProvider"]).get_outputs()]

    def pick(answer: bytes, name: str) -> np.ndarray:
        y = np.asarray(json.loads(answer), np.float32)
        return (y if len(names) == 1 else y[:, names.index(name)]).ravel()

    return pick


@dataclass(frozen=True)
class Served:
    """How one contender is started and called on one model."""

    command: list[str]
    path: str
    body: bytes
    output: Callable[[bytes, str], np.ndarray]
    env: dict[str, str] = field(default_factory=dict)


def leanserve_repo(model: Model, root: Path, window_ms: float, overload_wait_ms: float | None = None) -> Path:
    """``overload_wait_ms``: the model's shedding setting (None: leanserve's default)."""
    folder = root / model.name
    (folder / "1").mkdir(parents=True, exist_ok=True)
    shutil.copy(model.onnx, folder / "1" / "model.onnx")
    shedding = "" if overload_wait_ms is None else f"overload_wait_ms = {overload_wait_ms}\n"
    (folder / "model.toml").write_text(
        f"max_batch_size = {MAX_BATCH}\n[dynamic_batching]\nmax_queue_delay_ms = {window_ms}\n{shedding}"
        f"[runtime]\nintra_op_threads = {model.threads}\n"
    )
    return root


def served(
    peer: str,
    model: Model,
    port: int,
    work: Path,
    window_ms: float,
    grpc_port: int = 0,
    overload_wait_ms: float | None = None,
) -> Served:
    """The command line, path and body of ``peer`` serving ``model`` on ``port`` (``overload_wait_ms``:
    leanserve's shedding setting, None for its default)."""
    v2_path = f"/v2/models/{model.name}/infer"
    if peer == "leanserve":
        repo = leanserve_repo(model, work / "repo", window_ms, overload_wait_ms)
        cmd = [str(Path(PY).with_name("leanserve")), "serve", str(repo), "--port", str(port), "--log-level", "warning"]
        if grpc_port:
            cmd += ["--grpc-port", str(grpc_port)]
        return Served(cmd, v2_path, v2_body(model.feed), v2_output)
    python = str(ensure(ENVS[peer]))
    if peer == "fastapi":
        cmd = [python, str(PEER_DIR / "fastapi_app.py"), str(model.onnx), str(port), str(model.threads)]
        return Served(cmd, v2_path, v2_body(model.feed), v2_output)
    cmd = [python, str(PEER_DIR / f"{peer}_app.py"), "--model", model.name, "--onnx", str(model.onnx)]
    cmd += ["--threads", str(model.threads), "--port", str(port), "--max-batch", str(MAX_BATCH)]
    cmd += ["--window-ms", str(window_ms), "--workdir", str(work / peer)]
    if grpc_port:
        cmd += ["--grpc-port", str(grpc_port)]
    if peer == "bentoml":
        return Served(cmd, v2_path, stacked_body(model.feed), stacked_output(model))
    if peer == "torchserve":
        return Served(cmd, f"/predictions/{model.name}", v2_body(model.feed), v2_output)
    return Served(cmd, v2_path, v2_body(model.feed), v2_output)


PEERS = ["leanserve", "fastapi", "litserve", "bentoml", "rayserve", "mlserver", "pytriton", "torchserve"]


# ---- load -------------------------------------------------------------------------------------


def _loadgen() -> Any:
    try:
        from leanserve.loadgen import runner
    except ImportError:
        return None
    return runner


def driver_name(choice: str) -> str:
    if choice == "auto":
        return "leanserve-bench" if _loadgen() is not None else "wrk"
    return choice


def _workload(port: int, path: str, body: bytes) -> Any:
    """leanserve.loadgen's workload of one request, encoded once: this peer's own path and body."""
    from leanserve.loadgen.runner import Workload
    from leanserve.loadgen.schedule import DRAWN

    head = (
        f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\n\r\n"
    )
    return Workload("127.0.0.1", port, ("m",), (head.encode() + body,), (0,), np.zeros(DRAWN, np.int64))


def _loop_factory() -> Callable[[], Any] | None:
    try:
        import uvloop
    except ImportError:
        return None
    factory: Callable[[], Any] = uvloop.new_event_loop
    return factory


def drive(
    driver: str,
    port: int,
    path: str,
    body: bytes,
    duration: float,
    concurrency: int | None = None,
    rate: float | None = None,
) -> Load | None:
    """One load level against one server: the only function that knows the load generator.

    ``leanserve-bench``: leanserve's load generator (``leanserve.loadgen``, behind ``leanserve bench``)
    with this exact request encoded once; closed loop at ``concurrency`` or open loop (Poisson) at
    ``rate``. ``wrk``: closed loop only (None for a rate). The library rather than the command:
    ``leanserve bench URL --model M`` reads the model's metadata and posts V2 JSON to
    /v2/models/M/infer, and several peers serve neither (TorchServe's path, BentoML's body, no
    metadata endpoint on LitServe, Ray Serve, BentoML or FastAPI); the library takes the request as is.
    """
    if driver == "wrk":
        if rate is not None:
            return None
        w = wrk(f"http://127.0.0.1:{port}{path}", body, concurrency or 1, duration)
        return Load(
            concurrency, None, w.requests_per_s, w.p50_ms, float("nan"), w.p99_ms, {"any": w.errors} if w.errors else {}
        )
    runner = _loadgen()
    import asyncio

    from leanserve.loadgen.schedule import Level
    from leanserve.loadgen.windows import Plan

    level = Level(concurrency=concurrency) if concurrency is not None else Level(rate=rate)
    with asyncio.Runner(loop_factory=_loop_factory()) as loop:
        results = loop.run(runner.measure_level(_workload(port, path, body), level, Plan.for_duration(duration), 1.0))
    r = results[-1]
    return Load(
        concurrency,
        rate,
        r.throughput,
        r.p50_ms,
        r.p90_ms,
        r.p99_ms,
        dict(r.errors),
        client_cpu=r.client_cpu,
        client_saturated=r.client_saturated,
        stable=r.stable,
    )


def slo_rate(driver: str, port: int, path: str, body: bytes, target_ms: float, duration: float) -> float | None:
    """The highest open-loop rate whose p99 stays under ``target_ms`` (leanserve's search; None with wrk)."""
    if driver == "wrk":
        return None
    runner = _loadgen()
    import asyncio

    from leanserve.loadgen.windows import Plan

    workload = _workload(port, path, body)
    with asyncio.Runner(loop_factory=_loop_factory()) as loop:
        search, _ = loop.run(
            runner.search_slo(workload, target_ms, Plan.for_duration(duration), 0.5, [], None, 30.0, 1024)
        )
    rate: float | None = search.rate
    return rate


# ---- one contender on one model ---------------------------------------------------------------


@dataclass
class Running:
    """A contender started on a model and checked, with what it has measured so far."""

    peer: str
    served: Served
    port: int
    proc: subprocess.Popen[bytes]
    run: PeerRun


def start_checked(
    peer: str, model: Model, args: argparse.Namespace, work: Path, expect: np.ndarray
) -> Running | PeerRun:
    """Start ``peer`` on ``model``: its cold start, checked answer and idle memory; a PeerRun with the error if not."""
    port = free_port()
    try:
        # leanserve's shedding off: no peer sheds, and the closed-loop clients are patient (with the
        # default controlled delay, MiniLM at c8 and c32 answered hundreds of them 503).
        s = served(peer, model, port, work, args.window_ms, overload_wait_ms=0)
    except Exception as e:  # an install that fails is a result: the peer is listed with the reason
        return PeerRun(peer, model.name, error=f"install: {e}"[:400])
    try:
        proc, cold, answer = start(s, port, work / f"{peer}-{model.name}.log")
    except Exception as e:
        return PeerRun(peer, model.name, error=f"start: {e}"[:400])
    if not np.allclose(s.output(answer, model.output), expect.ravel(), rtol=1e-3, atol=1e-4):
        stop(proc)
        return PeerRun(peer, model.name, cold_start_s=cold, error="wrong answer: differs from ONNX Runtime's")
    time.sleep(1.0)  # idle: after the first answer, before any load
    run = PeerRun(peer, model.name, cold_start_s=cold, idle_rss_mb=resident_mb(proc.pid))
    print(f"   {peer:11} {model.name:7} cold start {cold:5.1f} s, idle {run.idle_rss_mb:6.0f} MB", flush=True)
    return Running(peer, s, port, proc, run)


def measure_model(
    model: Model, peers: list[str], args: argparse.Namespace, driver: str, work: Path, expect: np.ndarray
) -> list[PeerRun]:
    """Every contender on ``model``: together (the default) or, with ``--alone``, one after another."""
    if not args.alone:
        return measure_together(model, peers, args, driver, work, expect)
    return [run for peer in peers for run in measure_together(model, [peer], args, driver, work, expect)]


def measure_together(
    model: Model, peers: list[str], args: argparse.Namespace, driver: str, work: Path, expect: np.ndarray
) -> list[PeerRun]:
    """Contenders on ``model``: all started (one at a time), then each load level on each in turn.

    The machine's speed drifts (other jobs share it): taking a level on every contender back to
    back, rather than every level on one contender and then the next, keeps a level's ratios
    between contenders measured under the same conditions. The price: the idle contenders' own
    background work (Ray's controller, a JVM) shares the cores with the one measured, which an
    engine running two threads (MiniLM) feels most; ``--alone`` runs each by itself instead.
    """
    running: list[Running] = []
    failed: list[PeerRun] = []
    try:
        for peer in peers:
            started = start_checked(peer, model, args, work, expect)
            if isinstance(started, Running):
                running.append(started)
            else:
                print(f"   {peer:11} {model.name:7} FAILED: {started.error}", flush=True)
                failed.append(started)
        for r in running:  # warm-up
            drive(driver, r.port, r.served.path, r.served.body, 1.0, concurrency=8)
        levels: list[tuple[int | None, float | None]] = [(c, None) for c in args.concurrency] + [(None, model.rate)]
        for concurrency, rate in levels:
            for r in running:
                if r.run.error:
                    continue
                try:
                    load = drive(driver, r.port, r.served.path, r.served.body, args.duration, concurrency, rate)
                except Exception as e:
                    r.run = replace(r.run, error=f"load: {e}"[:400])
                    continue
                if load is None:
                    continue
                r.run.loads.append(load)
                label = f"c{concurrency}" if concurrency is not None else f"{rate:g}/s"
                print(
                    f"   {r.peer:11} {model.name:7} {label:6} {load.throughput:9.0f} req/s  p50 {load.p50_ms:8.3f}  "
                    f"p99 {load.p99_ms:8.2f} ms  errors {sum(load.errors.values())}",
                    flush=True,
                )
        if model.name in args.slo_models:
            for r in running:
                if r.run.error:
                    continue
                found = slo_rate(driver, r.port, r.served.path, r.served.body, args.slo_p99, args.slo_duration)
                r.run = replace(r.run, slo_rate=found)
                print(
                    f"   {r.peer:11} {model.name:7} highest rate with p99 <= {args.slo_p99:g} ms: {found}", flush=True
                )
    finally:
        for r in running:
            stop(r.proc)
    order = {p: i for i, p in enumerate(peers)}
    return sorted([r.run for r in running] + failed, key=lambda run: order[run.peer])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--duration", type=float, default=8.0, help="seconds measured per load level")
    parser.add_argument("--concurrency", type=lambda s: [int(x) for x in s.split(",")], default=[1, 8, 32])
    parser.add_argument("--models", default="tiny,digits,minilm")
    parser.add_argument("--peers", default=",".join(PEERS), help="contenders, in order (leanserve among them)")
    parser.add_argument("--window-ms", type=float, default=0.0, help="batching window of every server")
    parser.add_argument("--driver", choices=["auto", "leanserve-bench", "wrk"], default="auto")
    parser.add_argument("--slo-models", default="digits", help="models whose highest rate under --slo-p99 is searched")
    parser.add_argument("--slo-p99", type=float, default=5.0, help="the p99 target of that search, ms")
    parser.add_argument("--slo-duration", type=float, default=2.0, help="seconds measured per rate tried")
    parser.add_argument("--install-only", action="store_true", help="make the peers' environments and stop")
    parser.add_argument(
        "--alone", action="store_true", help="each contender started, measured at every level and stopped in turn"
    )
    parser.add_argument("--out", type=Path, default=OUT / "peers.json")
    args = parser.parse_args()
    peers = [p for p in args.peers.split(",") if p]
    if args.install_only:
        for p in peers:
            if p in ENVS:
                print(p, ensure(ENVS[p]), flush=True)
        return 0
    args.slo_models = [m for m in args.slo_models.split(",") if m]
    driver = driver_name(args.driver)
    if driver == "wrk" and shutil.which("wrk") is None:
        print("wrk is not installed (apt-get install -y wrk), and leanserve.loadgen is not there", file=sys.stderr)
        return 2
    print(f"load generator: {driver}", flush=True)
    runs: list[PeerRun] = []
    ceilings: dict[str, Ceiling] = {}
    with tempfile.TemporaryDirectory(prefix="peers-") as tmp:
        work = Path(tmp)
        for model in build_models(args.models.split(","), work):
            ceilings[model.name] = ceiling(model)
            print(f"== {model.name}: ceiling {ceilings[model.name]}", flush=True)
            expect = ort.InferenceSession(str(model.onnx), providers=["CPUExecutionProvider"]).run(
                [model.output], model.feed
            )[0]
            (work / model.name).mkdir(parents=True, exist_ok=True)
            runs += measure_model(model, peers, args, driver, work / model.name, expect)
    doc = {
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "environment": environment(),
        "versions": peer_versions(peers),
        "driver": driver,
        "duration_s": args.duration,
        "alone": args.alone,
        "window_ms": args.window_ms,
        "slo_p99_ms": args.slo_p99,
        "slo_models": args.slo_models,
        "load_average": os.getloadavg(),
        "ceilings": {k: asdict(v) for k, v in ceilings.items()},
        "runs": [asdict(r) for r in runs],
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(doc, indent=1))
    text = markdown(doc)
    (args.out.with_suffix(".md")).write_text(text + "\n" + "\n".join(targets(doc)) + "\n")
    print(text)
    print("\n".join(targets(doc)))
    chart(doc, args.out.with_suffix(".png"))
    print(f"\nwritten: {args.out}, {args.out.with_suffix('.md')}, {args.out.with_suffix('.png')}")
    return 0


DISTRIBUTIONS = {
    "fastapi": "fastapi",
    "litserve": "litserve",
    "bentoml": "bentoml",
    "rayserve": "ray",
    "mlserver": "mlserver",
    "pytriton": "nvidia-pytriton",
    "torchserve": "torchserve",
}


def peer_versions(peers: list[str]) -> dict[str, str]:
    """Each peer's installed version, read from its own environment."""
    versions = {}
    for p in peers:
        if p not in DISTRIBUTIONS:
            continue
        python = Path(HERE / ".peers" / p / "venv" / "bin" / "python")
        if not python.exists():
            continue
        code = f"import importlib.metadata as m; print(m.version({DISTRIBUTIONS[p]!r}))"
        done = subprocess.run([str(python), "-c", code], capture_output=True, text=True)
        versions[p] = done.stdout.strip() or "?"
    return versions


if __name__ == "__main__":
    sys.exit(main())
