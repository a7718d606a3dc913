"""The hot path's CPU per request, in process, before and after a change.

    .venv/bin/python benchmarks/hotpath.py [--before-ref REF] [--rounds 6] [--calls 4000]
        [--wrk 4] [--wrk-concurrency 1,32]

On a shared machine, requests per second under wrk swing with whatever else runs; the CPU one
request costs the server does not. This drives the fast front end (:class:`HttpProtocol`) with
pre-built request bytes and a transport that only records the answer, in child processes that
alternate between the source tree of ``--before-ref`` (``git archive``, default ``HEAD``) and
this working tree:

- ``c1``: one request at a time on one connection (every batch is one request, run inline);
- ``c32``: 32 connections each given a request in the same event-loop turn, then all 32 answers
  awaited (the batcher takes them as one batch, as under wrk at concurrency 32).

With ``--wrk SECONDS`` it also runs the limit server (``../shared/reference/limit_server.py``),
leanserve at the ref and leanserve from this tree, alternating, each as a process under wrk at
each of ``--wrk-concurrency`` (default 32), and reports each server's CPU time per request answered
(from /proc): a server bound by its event loop's core serves in inverse proportion to it, whatever
else the machine runs. Its p50 and p99 there too: at concurrency 1 latency is the figure, and the
three servers' medians over the same alternating rounds compare them (``--before-ref 734b20c^``
is the code issue 9 was filed against).

Each in-process figure is the process's CPU time (``time.process_time``, every thread) per request, the
best of twenty short passes: other processes only ever add time (on a loaded machine they do even
to CPU time, through shared caches), and the median of that over the rounds. The model is the
serving benchmark's tiny MLP with one ORT thread.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import textwrap
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from serving import LIMIT_SERVER, free_port, start_server, tiny_repository, v2_body, wrk

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
PY = sys.executable

CHILD = textwrap.dedent(
    """
    import asyncio, gc, json, sys, time
    sys.path.insert(0, sys.argv[1])
    from pathlib import Path
    from leanserve.protocol import Limits
    from leanserve.registry import ModelRegistry
    from leanserve.router import Router
    from leanserve.server.handlers import Handlers
    from leanserve.server.http import ConnectionTracker, HttpProtocol

    REPO, BODY, N = Path(sys.argv[2]), open(sys.argv[3], "rb").read(), int(sys.argv[4])
    PASSES = 20  # short passes, the best one taken: other processes only ever add time
    REQUEST = (b"POST /v2/models/tiny/infer HTTP/1.1\\r\\nHost: x\\r\\nContent-Type: application/json\\r\\n"
               b"Content-Length: %d\\r\\n\\r\\n" % len(BODY)) + BODY

    class Transport:
        future = None
        def write(self, data):
            self.future.set_result(data)
        def writelines(self, parts):
            self.write(b"".join(parts))
        def get_extra_info(self, name, default=None):
            return ("127.0.0.1", 1)
        def is_closing(self): return False
        def close(self): pass
        def pause_reading(self): pass
        def resume_reading(self): pass

    async def main():
        registry = ModelRegistry(REPO)
        await registry.load_all()
        handlers = Handlers(registry, Router(registry, Limits()))
        try:  # the collector as the server sets it once started (trees from before it lack this)
            from leanserve.server.app import settle_collector
        except ImportError:
            gc.collect()
            gc.freeze()
        else:
            settle_collector()
        loop = asyncio.get_running_loop()
        conns = []
        for _ in range(32):
            protocol = HttpProtocol(handlers, None, Limits(), ConnectionTracker())
            transport = Transport()
            protocol.connection_made(transport)
            conns.append((protocol, transport))

        async def c1():
            protocol, transport = conns[0]
            transport.future = loop.create_future()
            protocol.data_received(REQUEST)
            answer = await transport.future
            assert answer.startswith(b"HTTP/1.1 200"), answer[:300]
            return 1

        async def c32():
            futures = []
            for protocol, transport in conns:
                transport.future = f = loop.create_future()
                futures.append(f)
                protocol.data_received(REQUEST)
            for f in futures:
                answer = await f
                assert answer.startswith(b"HTTP/1.1 200"), answer[:300]
            return 32

        result = {}
        for name, call in (("c1", c1), ("c32", c32)):
            for _ in range(300):
                await call()
            gc.collect()
            best = []
            for _ in range(PASSES):
                t = time.process_time_ns()
                n = 0
                while n < N // PASSES:
                    n += await call()
                best.append((time.process_time_ns() - t) / n)
            result[name] = min(best)
        await registry.close()
        print(json.dumps(result))

    try:
        import uvloop
        uvloop.run(main())
    except ImportError:
        asyncio.run(main())
    """
)


def measure(before_ref: str, rounds: int, calls: int) -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as tmp:
        repo = tiny_repository(Path(tmp) / "repo")
        x = np.random.default_rng(1).normal(size=(1, 64)).astype(np.float32)
        body_file = Path(tmp) / "body.json"
        body_file.write_bytes(v2_body({"x": x}))
        before = Path(tmp) / "before"
        before.mkdir()
        archive = subprocess.run(
            ["git", "-C", str(ROOT), "archive", before_ref, "src"], capture_output=True, check=True
        )
        subprocess.run(["tar", "-x", "-C", str(before)], input=archive.stdout, check=True)
        trees = {"before": before / "src", "after": ROOT / "src"}
        runs: dict[str, list[dict[str, float]]] = {"before": [], "after": []}
        for r in range(rounds):
            for name in ("before", "after") if r % 2 == 0 else ("after", "before"):
                out = subprocess.run(
                    [PY, "-c", CHILD, str(trees[name]), str(repo), str(body_file), str(calls)],
                    capture_output=True,
                    text=True,
                    env={**os.environ, "PYTHONPATH": str(trees[name])},
                )
                if out.returncode != 0:
                    raise RuntimeError(f"{name} failed:\n{out.stderr[-3000:]}")
                runs[name].append(json.loads(out.stdout.strip().splitlines()[-1]))
                print(
                    f"  round {r + 1} {name:6}: "
                    + ", ".join(f"{k} {v / 1e3:.2f} us" for k, v in runs[name][-1].items()),
                    flush=True,
                )
    summary: dict[str, Any] = {"before_ref": before_ref, "rounds": rounds, "calls": calls, "runs": runs}
    for level in ("c1", "c32"):
        b = statistics.median(x[level] for x in runs["before"])
        a = statistics.median(x[level] for x in runs["after"])
        summary[level] = {"before_us": b / 1e3, "after_us": a / 1e3, "change": a / b - 1}
    return summary


# ---- the server under wrk: CPU per request ---------------------------------------------------------


def _cpu_seconds(pid: int) -> float:
    """User and system CPU time of a process so far, from /proc."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def server_cpu(
    name: str, cmd: list[str], env: dict[str, str], url: str, body: bytes, seconds: float, concurrency: int = 32
) -> dict[str, Any]:
    """One server under wrk: its CPU time per request answered, and the load's figures."""
    proc, _ = start_server(cmd, url, body, env=env)
    try:
        wrk(url, body, concurrency, 1.0)  # warm-up
        before = _cpu_seconds(proc.pid)
        load = wrk(url, body, concurrency, seconds)
        used = _cpu_seconds(proc.pid) - before
    finally:
        proc.terminate()
        proc.wait(timeout=30)
    answered = load.requests_per_s * max(1, round(seconds))
    return {
        "server": name,
        "concurrency": concurrency,
        "cpu_us_per_request": used / answered * 1e6,
        "requests_per_s": load.requests_per_s,
        "p50_ms": load.p50_ms,
        "p99_ms": load.p99_ms,
    }


def under_wrk(before_ref: str, rounds: int, seconds: float, concurrency: int = 32) -> dict[str, Any]:
    """The limit server, leanserve at ``before_ref`` and this tree, alternating, each as its own process."""
    with tempfile.TemporaryDirectory() as tmp:
        repo = tiny_repository(Path(tmp) / "repo")
        x = np.random.default_rng(1).normal(size=(1, 64)).astype(np.float32)
        body = v2_body({"x": x})
        before = Path(tmp) / "before"
        before.mkdir()
        archive = subprocess.run(
            ["git", "-C", str(ROOT), "archive", before_ref, "src"], capture_output=True, check=True
        )
        subprocess.run(["tar", "-x", "-C", str(before)], input=archive.stdout, check=True)
        leanserve = str(Path(PY).with_name("leanserve"))
        for tree in (before / "src", ROOT / "src"):
            imported = subprocess.run(
                [PY, "-c", "import leanserve; print(leanserve.__file__)"],
                capture_output=True,
                text=True,
                check=True,
                env={**os.environ, "PYTHONPATH": str(tree)},
            ).stdout.strip()
            # A server started without its tree's PYTHONPATH runs the installed (editable) package:
            # "before" and "after" would be the same code, as they were here until 2026-12-05.
            assert Path(imported).is_relative_to(tree), f"leanserve from {imported}, not {tree}"
        names = ["limit", "before", "after"] if LIMIT_SERVER.exists() else ["before", "after"]
        runs: dict[str, list[dict[str, Any]]] = {name: [] for name in names}
        for r in range(rounds):
            for name in names if r % 2 == 0 else names[::-1]:
                port = free_port()
                url = f"http://127.0.0.1:{port}/v2/models/tiny/infer"
                if name == "limit":
                    cmd = [PY, str(LIMIT_SERVER), str(repo / "tiny/1/model.onnx"), str(port), "--name", "tiny"]
                    env = dict(os.environ)
                else:
                    cmd = [leanserve, "serve", str(repo), "--port", str(port), "--log-level", "warning"]
                    tree = before / "src" if name == "before" else ROOT / "src"
                    env = {**os.environ, "PYTHONPATH": str(tree)}
                runs[name].append(server_cpu(name, cmd, env, url, body, seconds, concurrency))
                f = runs[name][-1]
                print(
                    f"  c{concurrency} round {r + 1} {name:6}: {f['cpu_us_per_request']:.1f} us of CPU a request, "
                    f"{f['requests_per_s']:,.0f} req/s, p50 {f['p50_ms']:.3f} ms, p99 {f['p99_ms']:.2f} ms",
                    flush=True,
                )
    return {
        "before_ref": before_ref,
        "concurrency": concurrency,
        "runs": runs,
        **{name: statistics.median(x["cpu_us_per_request"] for x in runs[name]) for name in names},
        "medians": {
            name: {key: statistics.median(x[key] for x in runs[name]) for key in ("requests_per_s", "p50_ms", "p99_ms")}
            for name in names
        },
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--before-ref", default="HEAD")
    parser.add_argument("--rounds", type=int, default=6)
    parser.add_argument("--calls", type=int, default=4000)
    parser.add_argument("--out", type=Path, default=HERE / "out" / "hotpath.json")
    parser.add_argument(
        "--wrk", type=float, default=0.0, metavar="SECONDS", help="also each server under wrk at c32 for this long"
    )
    parser.add_argument(
        "--wrk-concurrency",
        type=lambda s: [int(x) for x in s.split(",")],
        default=[32],
        help="the levels of --wrk, comma-separated (default 32)",
    )
    args = parser.parse_args()
    # --calls 0: only the servers under wrk (a ref from before the in-process harness's API cannot run it).
    summary = measure(args.before_ref, args.rounds, args.calls) if args.calls > 0 else {"before_ref": args.before_ref}
    if args.wrk > 0:
        summary["under_wrk"] = {
            f"c{c}": under_wrk(args.before_ref, args.rounds, args.wrk, c) for c in args.wrk_concurrency
        }
    for level in ("c1", "c32") if args.calls > 0 else ():
        f = summary[level]
        print(
            f"{level:4} CPU per request: {f['before_us']:.2f} us before ({args.before_ref}), "
            f"{f['after_us']:.2f} us after ({f['change']:+.1%})"
        )
    for level, w in summary.get("under_wrk", {}).items():
        print(
            f"under wrk at {level}, medians over the rounds: "
            + "; ".join(
                f"{name} {w[name]:.1f} us of CPU a request, {w['medians'][name]['requests_per_s']:,.0f} req/s, "
                f"p50 {w['medians'][name]['p50_ms']:.3f} ms, p99 {w['medians'][name]['p99_ms']:.2f} ms"
                for name in ("limit", "before", "after")
                if name in w
            )
        )
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(summary, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
