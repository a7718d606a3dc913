"""Ragged batching, before and after: the demo's text model served by an older commit's code and by this tree's.

    .venv/bin/python benchmarks/ragged_ab.py --base c9aae50 [--duration 5] [--rounds 3]

Two leanserve processes serve the same repository (``minilm``, text in, ragged, as benchmarks/text.py
builds it, shedding off): one runs ``src/`` of ``--base`` (taken with ``git archive``), the other
this tree's ``src/``. wrk cycles through the demo's 200 evaluation sentences at concurrency 1 and 32,
alternating between the two servers round by round on the same machine, medians kept: what a
change to the batch policy (processing/grouping.py, the batch-size tuner) gained, with the
machine's load drifting over both alike. Reports embeddings per second, p50/p99, the server's
CPU per answered request and rows per engine run; writes benchmarks/out/ragged_ab.json.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tarfile
import tempfile
import time
from io import BytesIO
from pathlib import Path
from typing import Any

from serving import free_port
from text import OUT, measure, median_of, post_json, repository, text_body, wrk_bodies

from leanserve.demo import build_demo_repository, default_demo_dir
from leanserve.demo.sentences import labelled_sentences

ROOT = Path(__file__).resolve().parent.parent


def checkout_src(commit: str, into: Path) -> Path:
    """``src/`` of ``commit``, written under ``into``."""
    archive = subprocess.run(["git", "archive", commit, "src"], cwd=ROOT, capture_output=True, check=True).stdout
    with tarfile.open(fileobj=BytesIO(archive)) as tar:
        tar.extractall(into, filter="data")
    return into / "src"


def serve(src: Path, repo: Path, body: str) -> tuple[subprocess.Popen[bytes], str]:
    """A leanserve process importing from ``src``; returns it and its models URL once it answers."""
    port = free_port()
    cmd = [sys.executable, "-m", "leanserve", "serve", str(repo), "--port", str(port), "--failure-log-entries", "0"]
    log = tempfile.TemporaryFile()  # noqa: SIM115 (lives as long as the server)
    proc = subprocess.Popen(cmd, env={**os.environ, "PYTHONPATH": str(src)}, stdout=subprocess.DEVNULL, stderr=log)
    base = f"http://127.0.0.1:{port}/v2/models"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            log.seek(0)
            raise RuntimeError(f"the server from {src} exited: {log.read().decode(errors='replace')[-2000:]}")
        try:
            post_json(f"{base}/minilm/infer", body)
            return proc, base
        except OSError:
            time.sleep(0.1)
    proc.kill()
    raise RuntimeError(f"the server from {src} did not answer within 120 s")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--base", required=True, help="the commit to compare with (its src/ is served)")
    parser.add_argument("--duration", type=float, default=5.0, help="seconds per run (default 5)")
    parser.add_argument("--rounds", type=int, default=3, help="alternating rounds, medians kept (default 3)")
    args = parser.parse_args()
    demo = build_demo_repository(default_demo_dir(), progress=print)
    sentences, _ = labelled_sentences()
    bodies = [text_body(s) for s in sentences]
    servers: dict[str, tuple[subprocess.Popen[bytes], str]] = {}
    runs: dict[str, list[dict[str, Any]]] = {}
    with tempfile.TemporaryDirectory(prefix="leanserve-ragged-ab-") as tmp:
        repo = repository(demo, Path(tmp) / "repo")
        sources = {f"base {args.base}": checkout_src(args.base, Path(tmp) / "base"), "this tree": ROOT / "src"}
        try:
            for label, src in sources.items():
                servers[label] = serve(src, repo, bodies[0])
                wrk_bodies(f"{servers[label][1]}/minilm/infer", bodies, 8, 1.0)  # warm-up
            for round_ in range(1, args.rounds + 1):
                for c in (1, 32):
                    for label, (proc, base) in servers.items():
                        f = measure(proc.pid, f"{base}/minilm", bodies, c, args.duration)
                        runs.setdefault(f"{label} c{c}", []).append(f)
                        print(
                            f"round {round_} {label:18s} c{c:<3d} {f['ok_per_s']:7.1f} ok/s  "
                            f"p50 {f['p50_ms']:7.2f} ms  p99 {f['p99_ms']:7.2f} ms  errors {f['errors']}  "
                            f"CPU {f['server_cpu_ms_per_request']:.2f} ms/req  {f['rows_per_engine_run']:.1f} rows/run",
                            flush=True,
                        )
        finally:
            for proc, _base in servers.values():
                proc.terminate()
                proc.wait(timeout=30)
    medians = {key: median_of(figures) for key, figures in runs.items()}
    print(f"\n{'medians':24s} {'ok/s':>8s} {'p50 ms':>8s} {'p99 ms':>8s} {'CPU ms/req':>10s} {'rows/run':>8s}")
    for key, m in medians.items():
        print(
            f"{key:24s} {m['ok_per_s']:8.1f} {m['p50_ms']:8.2f} {m['p99_ms']:8.2f} "
            f"{m['server_cpu_ms_per_request']:10.2f} {m['rows_per_engine_run']:8.1f}"
        )
    before, after = f"base {args.base}", "this tree"
    for c in (1, 32):
        b, a = medians[f"{before} c{c}"], medians[f"{after} c{c}"]
        print(
            f"c{c}: this tree over the base: {a['ok_per_s'] / b['ok_per_s']:.2f}x embeddings/s, "
            f"{a['server_cpu_ms_per_request'] / b['server_cpu_ms_per_request']:.2f}x CPU per request"
        )
    OUT.mkdir(exist_ok=True)
    result = {"base": args.base, "medians": medians, "rounds": runs, "load_average": os.getloadavg()}
    (OUT / "ragged_ab.json").write_text(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
