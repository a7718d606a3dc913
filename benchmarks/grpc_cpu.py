"""Server CPU per gRPC call, leanserve against leanserve: two source trees in alternating rounds.

    .venv/bin/python benchmarks/grpc_cpu.py before=/path/to/old/src after=src [--rounds 5 --seconds 3]

Each tree serves the tiny model (``--grpc-port``) from its own process; h2load sends ModelInfer at
32 streams on one connection to each in turn, and the server's CPU time (user + system, all its
threads, from /proc) over the round is divided by the calls answered. CPU per call is the figure a
loaded machine changes least, and alternating rounds spread what load there is over both trees.
A tree is a folder holding the ``leanserve`` package, e.g. ``git archive main src | tar -x -C /tmp/main``.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from grpc_load import call_once, infer_request
from grpc_peers import frame, h2load
from peer_procs import start, stop
from serving import free_port, tiny_repository


@dataclass(frozen=True)
class Tree:
    name: str
    src: Path


@dataclass
class Served:
    """What peer_procs.start takes: the command, and an HTTP request that says the server is up."""

    command: list[str]
    path: str
    body: bytes
    env: dict[str, str]


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("trees", nargs="+", help="name=path of a folder holding the leanserve package")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--seconds", type=int, default=3)
    parser.add_argument("--concurrency", type=int, default=32)
    args = parser.parse_args()
    trees = [Tree(t.split("=", 1)[0], Path(t.split("=", 1)[1]).resolve()) for t in args.trees]
    x = np.random.default_rng(1).normal(size=(1, 64)).astype(np.float32)
    message = infer_request("tiny", {"x": x})
    # Over HTTP only to know that a server is up.
    http_body = (
        b'{"inputs":[{"name":"x","datatype":"FP32","shape":[1,64],"data":%s}]}' % str(x.ravel().tolist()).encode()
    )
    with tempfile.TemporaryDirectory(prefix="grpc-cpu-") as tmp:
        work = Path(tmp)
        repo = tiny_repository(work / "repo")
        body = work / "request.grpc"
        body.write_bytes(frame(message))
        running = []
        try:
            for tree in trees:
                port, grpc_port = free_port(), free_port()
                command = [sys.executable, "-m", "leanserve", "serve", str(repo), "--port", str(port)]
                command += ["--grpc-port", str(grpc_port), "--log-level", "warning"]
                served = Served(command, "/v2/models/tiny/infer", http_body, {"PYTHONPATH": str(tree.src)})
                proc, _, _ = start(served, port, work / f"{tree.name}.log")
                running.append((tree, proc, grpc_port))
            # The good answer's size: h2load checks sizes, not grpc-status (see grpc_peers.h2load).
            answer = len(asyncio.run(call_once(f"127.0.0.1:{running[0][2]}", message)))
            for _, _, grpc_port in running:
                h2load(grpc_port, body, 8, 2.0, answer)  # warm-up
            per_call: dict[str, list[float]] = {t.name: [] for t in trees}
            rate: dict[str, list[float]] = {t.name: [] for t in trees}
            for r in range(args.rounds):
                for tree, proc, grpc_port in running if r % 2 == 0 else running[::-1]:
                    before = cpu_seconds(proc.pid)
                    rps, _, _, errors = h2load(grpc_port, body, args.concurrency, args.seconds, answer)
                    used = cpu_seconds(proc.pid) - before
                    per_call[tree.name].append(used / max(rps * args.seconds, 1) * 1e6)
                    rate[tree.name].append(rps)
                    print(
                        f"round {r} {tree.name:12} {rps:8.0f} calls/s  {per_call[tree.name][-1]:6.0f} us CPU/call"
                        f"  errors {errors}",
                        flush=True,
                    )
        finally:
            for _, proc, _ in running:
                stop(proc)
    for tree in trees:
        print(
            f"{tree.name:12} median {statistics.median(per_call[tree.name]):6.0f} us CPU/call, "
            f"{statistics.median(rate[tree.name]):8.0f} calls/s (c{args.concurrency})"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
