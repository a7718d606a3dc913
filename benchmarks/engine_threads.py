"""Where MiniLM's time goes between the engine and the answer: each thread setting, engine alone and served.

    flock /tmp/bench.lock PYTHONPATH=src .venv/bin/python benchmarks/engine_threads.py \
        [--rounds 3] [--duration 5] [--only 1 2 6] [--serve 6] [--before OLD_TREE/src]

For each ONNX Runtime setting (intra-op threads 1 or 2; idle workers sleeping, spinning ONNX Runtime's
way, spinning a bounded time, or leanserve's policy), all-MiniLM-L6-v2 at 128 tokens is measured
- in process: the latency of a one-row run (median), items/s at batch 1 and 32, the process CPU per
  run (what spinning workers burn) and the times its threads blocked per run (a sleeping worker is
  woken through a futex for each parallel section);
- served by leanserve with that setting in model.toml (``--serve``), under wrk at concurrency 1 and 32:
  req/s, the server's CPU per request by thread (the event loop, the engine thread, ORT's worker), and
  from the server's own statistics the engine seconds per run, rows per run and the request seconds
  inside the server. ``--before`` serves another tree's leanserve (the code before a change) beside it.
Settings alternate round by round, so a load that comes and goes on a shared machine falls on all of
them; the tables print medians over rounds, and each server's fraction of the engine with its own
setting measured in the same round. Results go to benchmarks/out/engine_threads.json.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import sys
import tempfile
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort
from serving import PY, SENTENCE, free_port, start_server, v2_body, wrk_script

from leanserve.config import RuntimeOptions
from leanserve.runtimes.onnx import session_options
from leanserve.timing import thread_cpu_seconds

HERE = Path(__file__).resolve().parent


@dataclass(frozen=True)
class Setting:
    label: str
    threads: int
    spinning: bool | None  # None: left to leanserve's policy (runtimes.threads), in model.toml and in process
    spin_us: int = 0  # ORT's session.intra_op.spin_duration_us (0: its own spin)

    def toml(self) -> str:
        toml = f"intra_op_threads = {self.threads}\n"
        return toml if self.spinning is None else toml + f"allow_spinning = {str(self.spinning).lower()}\n"

    def session(self) -> ort.SessionOptions:
        if self.spinning is None:
            return session_options(RuntimeOptions(intra_op_threads=self.threads))
        so = ort.SessionOptions()
        so.intra_op_num_threads = self.threads
        so.inter_op_num_threads = 1
        so.add_session_config_entry("session.intra_op.allow_spinning", "1" if self.spinning else "0")
        if self.spin_us:
            so.add_session_config_entry("session.intra_op.spin_duration_us", str(self.spin_us))
        so.log_severity_level = 3
        return so


SETTINGS = (
    Setting("1 thread", 1, False),
    Setting("2 threads, sleeping", 2, False),
    Setting("2 threads, ORT's spin", 2, True),
    Setting("2 threads, spin 20 us", 2, True, 20),
    Setting("2 threads, spin 50 us", 2, True, 50),
    Setting("2 threads, spin 200 us", 2, True, 200),
    Setting("2 threads, leanserve's policy", 2, None),
)
BEFORE = "leanserve before (2 threads, policy)"


def sleeps() -> int:
    """Times this process's threads have blocked (voluntary context switches: a worker's futex wait is one)."""
    total = 0
    for task in Path("/proc/self/task").iterdir():
        try:
            status = (task / "status").read_text()
        except OSError:
            continue
        total += int(status.split("voluntary_ctxt_switches:")[1].split()[0])
    return total


def engine(model: Path, setting: Setting, feed: dict[str, np.ndarray], seconds: float) -> dict[str, float]:
    s = ort.InferenceSession(str(model), setting.session(), providers=["CPUExecutionProvider"])
    many = {k: np.repeat(v, 32, axis=0) for k, v in feed.items()}
    for _ in range(10):
        s.run(None, feed)
    lat = []
    cpu0, sleeps0, end = time.process_time(), sleeps(), time.perf_counter() + seconds
    while time.perf_counter() < end:
        t = time.perf_counter()
        s.run(None, feed)
        lat.append(time.perf_counter() - t)
    cpu = (time.process_time() - cpu0) / len(lat)
    blocked = (sleeps() - sleeps0) / len(lat)
    s.run(None, many)
    n, t0 = 0, time.perf_counter()
    while time.perf_counter() - t0 < seconds:
        s.run(None, many)
        n += 32
    return {
        "p50_ms": float(np.median(lat) * 1e3),
        "items_per_s_b1": float(1 / np.mean(lat)),
        "cpu_ms_per_run_b1": cpu * 1e3,
        "sleeps_per_run_b1": blocked,
        "items_per_s_b32": n / (time.perf_counter() - t0),
    }


def model_stats(port: int) -> dict[str, Any]:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/v2/models/minilm/stats", timeout=5) as r:
        doc: dict[str, Any] = json.loads(r.read())
    stats: dict[str, Any] = doc["model_stats"][0]
    return stats


def served(
    repo: Path, setting: Setting, body: bytes, duration: float, src: str | None = None
) -> dict[int, dict[str, float]]:
    """leanserve serving the model with ``setting`` in model.toml (``src``: another tree's leanserve)."""
    (repo / "minilm" / "model.toml").write_text(
        "max_batch_size = 32\n[dynamic_batching]\nmax_queue_delay_ms = 0\noverload_wait_ms = 0\n"
        f"[runtime]\n{setting.toml()}"
    )
    port = free_port()
    url = f"http://127.0.0.1:{port}/v2/models/minilm/infer"
    cmd = [str(Path(PY).with_name("leanserve")), "serve", str(repo), "--port", str(port), "--log-level", "warning"]
    own = os.environ.get("PYTHONPATH", "")
    os.environ["PYTHONPATH"] = src if src is not None else own  # the server inherits it
    try:
        proc, _ = start_server(cmd, url, body)
    finally:
        os.environ["PYTHONPATH"] = own
    script = 'wrk.method = "POST"\nwrk.headers["Content-Type"] = "application/json"\n'
    script += f"wrk.body = {json.dumps(body.decode())}\n"
    out: dict[int, dict[str, float]] = {}
    try:
        wrk_script(url, script, 8, 1.0)
        for c in (1, 32):
            cpu0, stats0 = thread_cpu_seconds(proc.pid), model_stats(port)
            load, total = wrk_script(url, script, c, duration)
            cpu1, stats1 = thread_cpu_seconds(proc.pid), model_stats(port)
            used = {tid: cpu1[tid] - cpu0.get(tid, 0.0) for tid in cpu1}
            loop = used.pop(proc.pid, 0.0)
            others = sorted(used.values(), reverse=True)
            inf0, inf1 = stats0["inference_stats"], stats1["inference_stats"]
            runs = stats1["execution_count"] - stats0["execution_count"]
            answered = inf1["success"]["count"] - inf0["success"]["count"]
            ms = 1000.0
            out[c] = {
                "req_per_s": load.requests_per_s,
                "p50_ms": load.p50_ms,
                "errors": load.errors,
                "cpu_ms_per_req": sum(used.values(), loop) * ms / max(total, 1),
                "loop_cpu_ms_per_req": loop * ms / max(total, 1),
                "engine_cpu_ms_per_req": (others[0] if others else 0) * ms / max(total, 1),
                "worker_cpu_ms_per_req": (others[1] if len(others) > 1 else 0) * ms / max(total, 1),
                "engine_ms_per_run": (inf1["compute_infer"]["ns"] - inf0["compute_infer"]["ns"]) / 1e6 / max(runs, 1),
                "rows_per_run": answered / max(runs, 1),
                "server_ms_per_req": (inf1["success"]["ns"] - inf0["success"]["ns"]) / 1e6 / max(answered, 1),
            }
    finally:
        proc.terminate()
        proc.wait(timeout=30)
    return out


def median_of(rounds: list[dict[str, float]]) -> dict[str, float]:
    return {k: statistics.median(r[k] for r in rounds) for k in rounds[0]}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--duration", type=float, default=5.0, help="seconds per load level and engine batch")
    parser.add_argument("--only", nargs="*", type=int, help="indices of the settings to run (default: all)")
    parser.add_argument("--serve", nargs="*", type=int, help="indices of the settings also served (default: --only)")
    parser.add_argument("--before", help="another tree's src/ (the code before a change), served with the policy")
    parser.add_argument("--out", type=Path, default=HERE / "out" / "engine_threads.json")
    args = parser.parse_args()
    from leanserve.demo import build_demo_repository, tokenize

    indices = args.only if args.only else range(len(SETTINGS))
    settings = [SETTINGS[i] for i in indices]
    serve = [SETTINGS[i] for i in (args.serve if args.serve is not None else indices)]
    demo = build_demo_repository()
    feed = {k: np.pad(v, ((0, 0), (0, 128 - v.shape[1]))) for k, v in tokenize([SENTENCE]).items()}
    body = v2_body(feed)
    engines: dict[str, list[dict[str, float]]] = {s.label: [] for s in settings}
    served_labels = [s.label for s in serve] + ([BEFORE] if args.before else [])
    servers: dict[str, dict[int, list[dict[str, float]]]] = {label: {1: [], 32: []} for label in served_labels}
    with tempfile.TemporaryDirectory() as tmp:
        repo = Path(tmp) / "repo"
        (repo / "minilm" / "1").mkdir(parents=True)
        model = repo / "minilm" / "1" / "model.onnx"
        shutil.copy(demo / "minilm" / "1" / "model.onnx", model)
        for r in range(args.rounds):
            runs: list[tuple[str, Setting, str | None]] = [(s.label, s, None) for s in serve]
            if args.before:
                runs.append((BEFORE, Setting(BEFORE, 2, None), args.before))
            for s in settings:
                engines[s.label].append(engine(model, s, feed, args.duration / 2))
                print(f"round {r} {s.label}: engine {json.dumps(engines[s.label][-1])}", flush=True)
            for label, setting, src in runs:
                for c, figures in served(repo, setting, body, args.duration, src).items():
                    servers[label][c].append(figures)
                    print(f"round {r} {label}: c{c} {json.dumps(figures)}", flush=True)
    print(f"\nmedians over {args.rounds} rounds (engine alone, in process)")
    print(f"{'setting':36} {'b1 p50 ms':>9} {'b1 it/s':>8} {'b32 it/s':>8} {'CPU ms/run':>10} {'sleeps/run':>10}")
    for s in settings:
        e = median_of(engines[s.label])
        print(
            f"{s.label:36} {e['p50_ms']:>9.2f} {e['items_per_s_b1']:>8.1f} {e['items_per_s_b32']:>8.1f}"
            f" {e['cpu_ms_per_run_b1']:>10.2f} {e['sleeps_per_run_b1']:>10.0f}"
        )
    if servers:
        print(
            "\nserved (x own: req/s over the same round's engine with the server's setting, median of rounds;"
            " x spin: over ORT's spin)"
        )
        print(
            f"{'server':36} {'conc':>4} {'req/s':>6} {'x own':>6} {'x spin':>6} {'p50 ms':>7} {'srv ms':>7}"
            f" {'eng ms':>7} {'rows':>5} {'CPU/req':>7} {'loop':>5} {'engine':>6} {'worker':>6}"
        )
        own = {s.label: s.label for s in serve} | {BEFORE: SETTINGS[1].label}  # the old policy: sleeping
        for label in served_labels:
            for c in (1, 32):
                rounds = servers[label][c]
                m = median_of(rounds)
                x = [_fraction(rounds, engines.get(name)) for name in (own[label], SETTINGS[2].label)]
                print(
                    f"{label:36} {c:>4} {m['req_per_s']:>6.1f} {x[0]:>6.2f} {x[1]:>6.2f} {m['p50_ms']:>7.2f}"
                    f" {m['server_ms_per_req']:>7.2f} {m['engine_ms_per_run']:>7.2f} {m['rows_per_run']:>5.1f}"
                    f" {m['cpu_ms_per_req']:>7.2f} {m['loop_cpu_ms_per_req']:>5.2f} {m['engine_cpu_ms_per_req']:>6.2f}"
                    f" {m['worker_cpu_ms_per_req']:>6.2f}"
                )
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"engines": engines, "servers": servers}, indent=1))
    return 0


def _fraction(served: list[dict[str, float]], engine: list[dict[str, float]] | None) -> float:
    """Median over rounds of the server's req/s over the engine's batch-1 items/s in the same round."""
    if not engine:
        return float("nan")
    return statistics.median(s["req_per_s"] / e["items_per_s_b1"] for s, e in zip(served, engine, strict=False))


if __name__ == "__main__":
    sys.exit(main())
