"""Scale-out, side by side in one run: ``serve --workers 1`` vs ``--workers 2``, and leanserve alone vs
leanserve on Ray Serve (one replica per model), on the tiny MLP and all-MiniLM-L6-v2.

    make bench-scaleout        # or: .venv/bin/python benchmarks/scaleout.py [--duration 10] [--skip-ray]

Load from wrk (POST, V2 JSON) on the same machine: with 2 cores the load generator takes a share
of what the servers could use, so the figures are ratios measured side by side, not capacities.
Writes benchmarks/out/scaleout.json.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import IO

import numpy as np
from serving import SENTENCE, Load, _percentile, environment, free_port, v2_body, write_tiny_mlp

HERE = Path(__file__).resolve().parent
PY = sys.executable


def repository(root: Path, demo: Path) -> Path:
    """tiny (1 engine thread) and minilm (threads left to the process's share: intra_op_threads = 0;
    one worker takes both cores, two workers one each). On Ray each replica reserves one CPU."""
    write_tiny_mlp(root / "tiny" / "1" / "model.onnx")
    (root / "tiny" / "model.toml").write_text(
        "max_batch_size = 32\n[runtime]\nintra_op_threads = 1\n[scale]\nnum_cpus = 1\n"
    )
    (root / "minilm" / "1").mkdir(parents=True)
    shutil.copy(demo / "minilm" / "1" / "model.onnx", root / "minilm" / "1" / "model.onnx")
    (root / "minilm" / "model.toml").write_text("max_batch_size = 32\n[scale]\nnum_cpus = 1\n")
    return root


def post_load(url: str, body: bytes, concurrency: int, seconds: float) -> Load:
    """wrk as serving.wrk runs it, with a 30 s timeout: MiniLM under load answers after wrk's default 2 s."""
    with tempfile.NamedTemporaryFile("w", suffix=".lua", delete=False) as f:
        f.write('wrk.method = "POST"\nwrk.headers["Content-Type"] = "application/json"\n')
        f.write(f"wrk.body = {json.dumps(body.decode())}\n")
        script = f.name
    threads = 1 if concurrency == 1 else 2
    command = ["wrk", f"-t{threads}", f"-c{concurrency}", f"-d{max(1, round(seconds))}s", "--timeout", "30s"]
    out = subprocess.run([*command, "--latency", "-s", script, url], capture_output=True, text=True, check=True).stdout
    os.unlink(script)
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))  # type: ignore[union-attr]
    errors = int(m.group(1)) if (m := re.search(r"Non-2xx or 3xx responses: (\d+)", out)) else 0
    if socket_errors := re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out):
        errors += sum(int(x) for x in socket_errors.groups())
    return Load(concurrency, rps, _percentile(out, "50%"), _percentile(out, "99%"), errors)


def ready(base: str, model: str, body: bytes) -> bool:
    try:
        req = urllib.request.Request(f"{base}/v2/models/{model}/infer", body, {"Content-Type": "application/json"})
        with urllib.request.urlopen(req, timeout=5) as r:
            return bool(r.status == 200)
    except OSError:
        return False


@contextmanager
def server(
    args: list[str], probe: tuple[str, bytes], timeout: float = 300, env: dict[str, str] | None = None
) -> Iterator[str]:
    port = free_port()
    with tempfile.TemporaryFile() as log:
        command = [PY, "-m", "leanserve", "serve", *args, "--port", str(port)]
        proc = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env={**os.environ, **(env or {})})
        yield from _serving(proc, log, f"http://127.0.0.1:{port}", args, probe, timeout)


def _serving(
    proc: subprocess.Popen[bytes], log: IO[bytes], base: str, args: list[str], probe: tuple[str, bytes], timeout: float
) -> Iterator[str]:
    try:
        deadline = time.monotonic() + timeout
        while not ready(base, *probe):
            if proc.poll() is not None or time.monotonic() > deadline:
                log.seek(0)
                raise RuntimeError(f"server {args} did not start: {log.read()[-2000:].decode(errors='replace')}")
            time.sleep(0.5)
        for _ in range(50):  # warm every worker / replica a little
            ready(base, *probe)
        yield base
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(60)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def side_by_side(
    bases: dict[str, str], model: str, body: bytes, concurrency: int, seconds: float, rounds: int
) -> dict[str, dict[str, float]]:
    """Each server in turn, ``rounds`` times (the order reversed every round): medians per server."""
    runs: dict[str, list[Load]] = {name: [] for name in bases}
    names = list(bases)
    for r in range(rounds):
        for name in names if r % 2 == 0 else reversed(names):
            time.sleep(0.5)
            runs[name].append(post_load(f"{bases[name]}/v2/models/{model}/infer", body, concurrency, seconds))
    summary = {}
    for name, loads in runs.items():
        summary[name] = {
            "requests_per_s": statistics.median(x.requests_per_s for x in loads),
            "p50_ms": statistics.median(x.p50_ms for x in loads),
            "p99_ms": statistics.median(x.p99_ms for x in loads),
            "errors": sum(x.errors for x in loads),
            "rounds_requests_per_s": [x.requests_per_s for x in loads],
        }
        s = summary[name]
        print(
            f"  {model:7} c{concurrency:<3} {name:22} {s['requests_per_s']:9.1f} req/s  p50 {s['p50_ms']:8.2f} ms"
            f"  p99 {s['p99_ms']:8.2f} ms  errors {s['errors']}",
            flush=True,
        )
    return summary


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--duration", type=float, default=5.0, help="seconds per run")
    parser.add_argument("--rounds", type=int, default=3, help="runs per server and case, alternated")
    parser.add_argument("--skip-ray", action="store_true")
    parser.add_argument("--out", type=Path, default=HERE / "out" / "scaleout.json")
    args = parser.parse_args()
    from leanserve.demo import build_demo_repository, tokenize

    demo = build_demo_repository(progress=lambda m: print(m, flush=True))
    feed = {k: np.pad(v, ((0, 0), (0, 128 - v.shape[1]))) for k, v in tokenize([SENTENCE]).items()}
    bodies = {"minilm": v2_body(feed), "tiny": v2_body({"x": np.ones((1, 64), np.float32)})}
    results: dict[str, object] = {"environment": environment(), "load_average_before": os.getloadavg()}
    with tempfile.TemporaryDirectory() as tmp, ExitStack() as stack:
        repo = repository(Path(tmp) / "repo", demo)
        probe = ("minilm", bodies["minilm"])
        print("serve --workers 1 and --workers 2, side by side", flush=True)
        bases = {f"workers {n}": stack.enter_context(server([str(repo), "--workers", str(n)], probe)) for n in (1, 2)}
        results["workers"] = {
            f"{model} c{c}": side_by_side(bases, model, bodies[model], c, args.duration, args.rounds)
            for model, c in (("minilm", 1), ("minilm", 32), ("tiny", 32))
        }
        stack.close()
        if not args.skip_ray:
            print("leanserve alone and on Ray Serve (one replica per model), side by side", flush=True)
            bases = {
                # One engine thread, as the Ray replica's one CPU gives it.
                "leanserve": stack.enter_context(server([str(repo)], probe, env={"LEANSERVE_ENGINE_THREADS": "1"})),
                "leanserve on ray": stack.enter_context(server([str(repo), "--ray"], probe)),
            }
            results["ray"] = {
                f"{model} c{c}": side_by_side(bases, model, bodies[model], c, args.duration, args.rounds)
                for model in ("tiny", "minilm")
                for c in (1, 32)
            }
    results["load_average_after"] = os.getloadavg()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=1))
    print(f"written to {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
