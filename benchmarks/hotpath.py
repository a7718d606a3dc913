"""The hot path's CPU per request, in process, before and after a change.

    .venv/bin/python benchmarks/hotpath.py [--before-ref REF] [--rounds 6] [--calls 4000]

On a shared machine, requests per second under wrk swing with whatever else runs; the CPU one
request costs the server does not. This drives the fast front end (:class:`HttpProtocol`) with
pre-built request bytes and a transport that only records the answer, in child processes that
alternate between the source tree of ``--before-ref`` (``git archive``, default ``HEAD``) and
this working tree:

- ``c1``: one request at a time on one connection (every batch is one request, run inline);
- ``c32``: 32 connections each given a request in the same event-loop turn, then all 32 answers
  awaited (the batcher takes them as one batch, as under wrk at concurrency 32).

Each figure is the process's CPU time (``time.process_time``, every thread) per request, the
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
from serving import tiny_repository, v2_body

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


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--before-ref", default="HEAD")
    parser.add_argument("--rounds", type=int, default=6)
    parser.add_argument("--calls", type=int, default=4000)
    parser.add_argument("--out", type=Path, default=HERE / "out" / "hotpath.json")
    args = parser.parse_args()
    summary = measure(args.before_ref, args.rounds, args.calls)
    for level in ("c1", "c32"):
        f = summary[level]
        print(
            f"{level:4} CPU per request: {f['before_us']:.2f} us before ({args.before_ref}), "
            f"{f['after_us']:.2f} us after ({f['change']:+.1%})"
        )
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(summary, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
