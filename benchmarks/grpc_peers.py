"""leanserve over gRPC and HTTP beside Triton's gRPC endpoint, in one run: `make bench-grpc`.

    .venv/bin/python benchmarks/grpc_peers.py [--duration 8] [--models tiny,minilm]

The tiny MLP and all-MiniLM-L6-v2 at concurrency 1 and 32. Two servers per model, each serving
HTTP and gRPC from one process: leanserve (``--grpc-port``) and NVIDIA PyTriton, whose bundled
Triton serves ``inference.GRPCInferenceService`` from C++ (ONNX Runtime in the bound Python
function; see peers/pytriton_app.py). Same engine threads, batch limit 32, window 0; leanserve's
shedding off (``overload_wait_ms = 0``: the clients are patient, the run measures throughput).

gRPC load comes from h2load (nghttp2, C): one HTTP/2 connection carrying ``concurrency`` streams,
as one gRPC channel does, each POSTing the same pre-serialized ``ModelInferRequest`` (the item in
``raw_input_contents``, as tritonclient sends it) with gRPC's 5-byte frame; latencies from its
per-request log. The client's limits: h2load checks the HTTP status, not the ``grpc-status``
trailer, so every answer's size is checked instead (an error answer carries no message), and each
server's answer is checked once with grpcio before the load. HTTP load comes from peers.py's
``drive`` (leanserve's load generator, or wrk). Results go to benchmarks/out/grpc_peers.json.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import re
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import onnxruntime as ort
from grpc_load import call_once, infer_request, output_of
from peer_procs import start, stop
from peers import Model, build_models, drive, driver_name, served
from serving import environment, free_port

HERE = Path(__file__).resolve().parent
METHOD = "/inference.GRPCInferenceService/ModelInfer"


@dataclass(frozen=True)
class Row:
    model: str
    server: str  # leanserve or pytriton
    protocol: str  # http or grpc
    concurrency: int
    throughput: float
    p50_ms: float
    p99_ms: float
    errors: int


def frame(message: bytes) -> bytes:
    """A gRPC message on the wire: uncompressed flag, 4-byte big-endian length, the message."""
    return b"\x00" + len(message).to_bytes(4, "big") + message


def h2load(
    port: int, body: Path, concurrency: int, duration: float, answer_bytes: int
) -> tuple[float, float, float, int]:
    """(requests/s, p50 ms, p99 ms, errors) of ModelInfer at ``concurrency`` streams on one connection."""
    with tempfile.NamedTemporaryFile(suffix=".log", delete=False) as f:
        log = Path(f.name)
    cmd = ["h2load", "-c1", f"-m{concurrency}", f"-D{max(1, round(duration))}"]
    cmd += ["-d", str(body), "-H", "content-type: application/grpc", "-H", "te: trailers", f"--log-file={log}"]
    out = subprocess.run([*cmd, f"http://127.0.0.1:{port}{METHOD}"], capture_output=True, text=True).stdout
    # Each line of the log: start time (us since the epoch), HTTP status, duration (us).
    rows = [line.split() for line in log.read_text().splitlines() if line.strip()]
    log.unlink()
    ms = np.array([int(r[2]) / 1000 for r in rows if r[1] == "200"])
    done = re.search(r"requests: \d+ total, \d+ started, (\d+) done, (\d+) succeeded, (\d+) failed, (\d+) errored", out)
    data = re.search(r"traffic: .*?, [\d.]+\w*B \((\d+)\) data", out)
    seconds = re.search(r"finished in ([\d.]+)(ms|s)", out)
    if not done or not seconds:
        raise RuntimeError(f"h2load said: {out[-600:]}")
    succeeded, failed, errored = int(done.group(2)), int(done.group(3)), int(done.group(4))
    elapsed = float(seconds.group(1)) / (1000 if seconds.group(2) == "ms" else 1)
    errors = failed + errored
    # h2load cannot see grpc-status: an answer of another size than the good one is an error answer.
    if data and succeeded and int(data.group(1)) != succeeded * (answer_bytes + 5):
        errors += max(0, succeeded - int(data.group(1)) // (answer_bytes + 5))
    if not len(ms):  # nothing answered in time (MiniLM on a loaded machine, a short warm-up)
        return 0.0, float("nan"), float("nan"), errors
    return succeeded / elapsed, float(np.percentile(ms, 50)), float(np.percentile(ms, 99)), errors


def run_model(model: Model, server: str, args: argparse.Namespace, driver: str, work: Path) -> list[Row]:
    port, grpc_port = free_port(), free_port()
    # Patient closed-loop clients: leanserve's shedding off, as benchmarks/serving.py runs MiniLM
    # (with it on, 32 clients on MiniLM are answered UNAVAILABLE by controlled delay, and the ratio
    # would measure the shedding policy, not the front ends).
    s = served(server, model, port, work, 0.0, grpc_port=grpc_port, overload_wait_ms=0)
    proc, _, _ = start(s, port, work / f"{server}-{model.name}.log")
    rows: list[Row] = []
    try:
        message = infer_request(model.name, model.feed)
        target = f"127.0.0.1:{grpc_port}"
        answer = asyncio.run(call_once(target, message))
        expect = ort.InferenceSession(str(model.onnx), providers=["CPUExecutionProvider"]).run(
            [model.output], model.feed
        )[0]
        if not np.allclose(output_of(answer, model.output).ravel(), expect.ravel(), rtol=1e-3, atol=1e-4):
            raise RuntimeError(f"{server} answered {model.name} over gRPC unlike ONNX Runtime")
        body = work / f"{server}-{model.name}.grpc"
        body.write_bytes(frame(message))
        h2load(grpc_port, body, 8, 2.0, len(answer))  # warm-up
        for c in args.concurrency:
            for protocol in ("grpc", "http"):
                if protocol == "grpc":
                    rps, p50, p99, errors = h2load(grpc_port, body, c, args.duration, len(answer))
                else:
                    load = drive(driver, port, s.path, s.body, args.duration, concurrency=c)
                    assert load is not None
                    rps, p50, p99, errors = load.throughput, load.p50_ms, load.p99_ms, sum(load.errors.values())
                rows.append(Row(model.name, server, protocol, c, rps, p50, p99, errors))
                print(
                    f"   {server:10} {model.name:7} {protocol:5} c{c:<3} {rps:9.0f} req/s  p50 {p50:8.3f}  "
                    f"p99 {p99:8.2f} ms  errors {errors}",
                    flush=True,
                )
        # A good answer after the load too: the error check above counts sizes, not statuses.
        asyncio.run(call_once(target, message))
    finally:
        stop(proc)
    return rows


def table(rows: list[Row]) -> str:
    lines = [
        "| model | server | protocol | conc | req/s | p50 ms | p99 ms | errors |",
        "|---|---|---|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        name = "**leanserve**" if r.server == "leanserve" else "PyTriton (Triton)"
        lines.append(
            f"| {r.model} | {name} | {r.protocol} | {r.concurrency} | {r.throughput:,.0f} | {r.p50_ms:.3f} "
            f"| {r.p99_ms:.2f} | {r.errors} |"
        )
    return "\n".join(lines)


def verdicts(rows: list[Row]) -> list[str]:
    """Issue 17's target (tiny, c32, gRPC: leanserve >= Triton), and the other gRPC ratios for the record."""
    at = {(r.model, r.server, r.protocol, r.concurrency): r for r in rows}
    out = []
    for model, c in sorted({(r.model, r.concurrency) for r in rows}):
        mine, theirs = at.get((model, "leanserve", "grpc", c)), at.get((model, "pytriton", "grpc", c))
        if mine is None or theirs is None:
            continue
        x = mine.throughput / theirs.throughput
        target = model == "tiny" and c == 32
        verdict = ("PASS" if x >= 1 else "MISS") if target else "    "
        out.append(
            f"  {verdict}  {model} c{c} gRPC: leanserve / Triton = {x:.2f}x{' (target >= 1x)' if target else ''}"
        )
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--duration", type=float, default=8.0)
    parser.add_argument("--concurrency", type=lambda s: [int(x) for x in s.split(",")], default=[1, 32])
    parser.add_argument("--models", default="tiny,minilm")
    parser.add_argument("--servers", default="leanserve,pytriton")
    parser.add_argument("--driver", choices=["auto", "leanserve-bench", "wrk"], default="auto")
    parser.add_argument("--out", type=Path, default=HERE / "out" / "grpc_peers.json")
    args = parser.parse_args()
    if shutil.which("h2load") is None:
        print("h2load is not installed: apt-get install -y nghttp2-client", file=sys.stderr)
        return 2
    driver = driver_name(args.driver)
    rows: list[Row] = []
    with tempfile.TemporaryDirectory(prefix="grpc-peers-") as tmp:
        work = Path(tmp)
        for model in build_models(args.models.split(","), work):
            for server in args.servers.split(","):
                (work / model.name).mkdir(exist_ok=True)
                try:
                    rows += run_model(model, server, args, driver, work / model.name)
                except Exception as e:  # one server's failure is reported, the others still run
                    print(f"   {server:10} {model.name:7} FAILED: {e}", flush=True)
    text = table(rows)
    print(text)
    print("\n".join(verdicts(rows)))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    doc = {
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "environment": environment(),
        "http_driver": driver,
        "h2load": subprocess.run(["h2load", "--version"], capture_output=True, text=True).stdout.strip(),
        "rows": [asdict(r) for r in rows],
    }
    args.out.write_text(json.dumps(doc, indent=1))
    print(f"written to {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
