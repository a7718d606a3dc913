"""Overload benchmark: MiniLM under clients that give up, and under an open loop at twice capacity.

    make bench-overload          # or: .venv/bin/python benchmarks/overload.py [--duration 20]

Side by side in one run, on the demo's all-MiniLM-L6-v2 (128 tokens, 2 threads):

1. **Capacity**: 8 closed-loop clients that wait as long as it takes; requests per second.
2. **Impatient clients** (the issue's run): 200 concurrent clients, each gives up after 1 s (closes
   its connection and sends the next request on a new one); a 503 is read and the next request sent
   at once. Once with shedding off (``overload_wait_ms = 0``: the queue before this issue, except
   that departed callers are still dropped) and once with the defaults. Goodput: answers within
   1 s per second, over capacity. After the load: requests still in flight (the model's stats, at
   once and 5 s later), and the server's resident memory before and after.
3. **Open loop**: Poisson arrivals at half capacity, then twice at twice capacity, back to back (a
   new arrival never waits for an earlier answer); each answer's latency. The issue's target: at
   2x, the admitted requests' p99 within 2x of the p99 at a light load, none lost (a request that
   got neither an answer nor a 503 is lost), memory flat. Both 2x runs are judged on latency and
   losses. Memory is judged as the soak benchmark judges it, after warm-up: growth over the second
   2x run under 5%. The first 2x run's growth is reported beside it: ONNX Runtime's arena grows
   each time a batch larger than any before runs (traced: every step of resident memory came with
   a new largest batch, 7 -> 9 -> 12 -> 15 rows, flat in between), a high-water mark bounded by
   ``max_batch_size``, not a leak.

Results are printed and written to benchmarks/out/overload.json; RESULTS.md records a run.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.request
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from serving import environment, free_port, resident_mb, start_server, v2_body

HERE = Path(__file__).resolve().parent
SENTENCE = "leanserve keeps models light, answers every request it accepts, and refuses the rest at once."


@dataclass
class Tally:
    in_time: int = 0  # 200 within the client's patience
    late: int = 0  # 200 after the client would have given up (open loop: never)
    timed_out: int = 0
    refused: int = 0  # 503
    expired: int = 0  # 504
    other: int = 0
    lost: int = 0  # the connection closed with no answer
    latencies: list[float] = field(default_factory=list)


def _request(path: str, body: bytes) -> bytes:
    head = f"POST {path} HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
    return head.encode() + body


async def _answer(reader: asyncio.StreamReader) -> int:
    """Read one response; its status."""
    head = await reader.readuntil(b"\r\n\r\n")
    status = int(head.split(b" ", 2)[1])
    length = 0
    for line in head.split(b"\r\n"):
        if line.lower().startswith(b"content-length:"):
            length = int(line.split(b":", 1)[1])
    await reader.readexactly(length)
    return status


def _count(t: Tally, status: int, seconds: float, patience: float) -> None:
    if status == 200:
        t.latencies.append(seconds)
        if seconds <= patience:
            t.in_time += 1
        else:
            t.late += 1
    elif status == 503:
        t.refused += 1
    elif status == 504:
        t.expired += 1
    else:
        t.other += 1


async def closed_loop(port: int, request: bytes, clients: int, seconds: float, patience: float) -> Tally:
    t = Tally()
    end = time.perf_counter() + seconds

    async def client() -> None:
        conn: tuple[asyncio.StreamReader, asyncio.StreamWriter] | None = None
        while time.perf_counter() < end:
            if conn is None:
                conn = await asyncio.open_connection("127.0.0.1", port)
            reader, writer = conn
            start = time.perf_counter()
            writer.write(request)
            try:
                status = await asyncio.wait_for(_answer(reader), patience)
            except TimeoutError:
                t.timed_out += 1
                writer.close()  # the client gives up: hang up, next request on a new connection
                conn = None
                continue
            except (asyncio.IncompleteReadError, ConnectionError):
                t.lost += 1
                conn = None
                continue
            _count(t, status, time.perf_counter() - start, patience)
        if conn is not None:
            conn[1].close()

    await asyncio.gather(*(client() for _ in range(clients)))
    return t


async def open_loop(port: int, request: bytes, rate: float, seconds: float) -> Tally:
    t = Tally()
    idle: list[tuple[asyncio.StreamReader, asyncio.StreamWriter]] = []
    tasks: set[asyncio.Task[None]] = set()
    rng = random.Random(7)

    async def one() -> None:
        conn = idle.pop() if idle else await asyncio.open_connection("127.0.0.1", port)
        reader, writer = conn
        start = time.perf_counter()
        writer.write(request)
        try:
            status = await asyncio.wait_for(_answer(reader), 30.0)
        except (TimeoutError, asyncio.IncompleteReadError, ConnectionError):
            t.lost += 1
            writer.close()
            return
        _count(t, status, time.perf_counter() - start, float("inf"))
        idle.append(conn)

    end = time.perf_counter() + seconds
    next_at = time.perf_counter()
    while next_at < end:
        next_at += rng.expovariate(rate)
        delay = next_at - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        task = asyncio.get_running_loop().create_task(one())
        tasks.add(task)
        task.add_done_callback(tasks.discard)
    if tasks:
        await asyncio.wait(tasks)
    for _, writer in idle:
        writer.close()
    return t


def p99(xs: list[float]) -> float:
    return float(np.percentile(xs, 99)) * 1000 if xs else float("nan")


def stats(port: int) -> dict[str, Any]:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/v2/models/minilm/stats", timeout=10) as r:
        doc: dict[str, Any] = json.loads(r.read())["model_stats"][0]
    return doc


def serve(repo: Path, overload_wait_ms: float | None, body: bytes) -> tuple[subprocess.Popen[bytes], int]:
    extra = "" if overload_wait_ms is None else f"overload_wait_ms = {overload_wait_ms}\n"
    (repo / "minilm" / "model.toml").write_text(
        "max_batch_size = 32\n[dynamic_batching]\nmax_queue_delay_ms = 0\n"
        + extra
        + "[runtime]\nintra_op_threads = 2\n"
    )
    port = free_port()
    cmd = [sys.executable, "-m", "leanserve", "serve", str(repo), "--port", str(port), "--failure-log-entries", "0"]
    proc, _ = start_server(cmd, f"http://127.0.0.1:{port}/v2/models/minilm/infer", body)
    return proc, port


def impatient(
    repo: Path, body: bytes, overload_wait_ms: float | None, seconds: float, capacity: float, patience: float
) -> dict[str, Any]:
    proc, port = serve(repo, overload_wait_ms, body)
    try:
        request = _request("/v2/models/minilm/infer", body)
        asyncio.run(closed_loop(port, request, 4, 3.0, 10.0))  # warm up
        rss_before = resident_mb(proc.pid)
        t = asyncio.run(closed_loop(port, request, 200, seconds, patience))
        in_flight_end = stats(port)["in_flight"]
        time.sleep(5)
        doc = stats(port)
        return {
            "overload_wait_ms": "default" if overload_wait_ms is None else overload_wait_ms,
            "tally": {k: v for k, v in asdict(t).items() if k != "latencies"},
            "goodput_per_s": t.in_time / seconds,
            "goodput_of_capacity": t.in_time / seconds / capacity,
            "p99_answered_ms": p99(t.latencies),
            "in_flight_after": in_flight_end,
            "in_flight_5s_later": doc["in_flight"],
            "dropped": doc.get("dropped", {}),
            "rss_mb_before": rss_before,
            "rss_mb_after": resident_mb(proc.pid),
        }
    finally:
        proc.terminate()
        proc.wait(30)


def _verdict(ok: bool) -> str:
    return "PASS" if ok else "MISS"


def verdicts(loop: dict[str, Any], impatient: dict[str, Any]) -> str:
    """The issue's figures, one line each, with PASS or MISS."""
    light, first, again = loop["light"], loop["twice"], loop["twice_again"]
    lost = first["tally"]["lost"] + again["tally"]["lost"]
    ratio = max(loop["p99_ratio"], loop["p99_ratio_again"])
    return "\n".join(
        [
            f"goodput, 200 clients giving up after 1 s: {impatient['goodput_of_capacity']:.1%} of capacity "
            f"(target >= 80%), in flight after {impatient['in_flight_after']}: "
            f"{_verdict(impatient['goodput_of_capacity'] >= 0.8 and impatient['in_flight_after'] == 0)}",
            f"open loop at 2x: admitted p99 {first['p99_ms']:.0f} ms, again {again['p99_ms']:.0f} ms, "
            f"light {light['p99_ms']:.0f} ms: {loop['p99_ratio']:.2f}x / {loop['p99_ratio_again']:.2f}x "
            f"(target <= 2x): {_verdict(ratio <= 2.0)}",
            f"open loop at 2x: lost {lost} (target 0): {_verdict(lost == 0)}",
            f"resident memory over the second 2x run: {again['rss_mb_before']:.0f} -> {again['rss_mb_after']:.0f} MB "
            f"({again['rss_growth']:+.1%}, target < 5% after warm-up; the first 2x run "
            f"{first['rss_mb_before']:.0f} -> {first['rss_mb_after']:.0f} MB, {first['rss_growth']:+.1%}): "
            f"{_verdict(again['rss_growth'] < 0.05)}",
        ]
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--duration", type=float, default=20.0, help="seconds per loaded run")
    parser.add_argument(
        "--tokens", type=int, default=128, help="tokens per request (fewer: a cheaper request, for a slow machine)"
    )
    parser.add_argument("--patience", type=float, default=1.0, help="seconds an impatient client waits")
    args = parser.parse_args()
    from leanserve.demo import build_demo_repository, tokenize

    demo = build_demo_repository(progress=lambda m: print(m, flush=True))
    feed = {
        k: np.pad(v, ((0, 0), (0, args.tokens - v.shape[1])))[:, : args.tokens] for k, v in tokenize([SENTENCE]).items()
    }
    body = v2_body(feed)
    result: dict[str, Any] = {"environment": environment(), "tokens": args.tokens, "patience_s": args.patience}
    with tempfile.TemporaryDirectory() as tmp:
        repo = Path(tmp) / "repo"
        (repo / "minilm" / "1").mkdir(parents=True)
        shutil.copy(demo / "minilm" / "1" / "model.onnx", repo / "minilm" / "1" / "model.onnx")
        proc, port = serve(repo, None, body)
        request = _request("/v2/models/minilm/infer", body)
        try:
            asyncio.run(closed_loop(port, request, 4, 3.0, 10.0))
            cap = asyncio.run(closed_loop(port, request, 8, args.duration / 2, 60.0))
            capacity = (cap.in_time + cap.late) / (args.duration / 2)
            print(f"capacity: {capacity:.1f} req/s (8 closed-loop clients)", flush=True)
            result["capacity_per_s"] = capacity
            runs = {}
            for name, factor in (("light", 0.5), ("twice", 2.0), ("twice_again", 2.0)):
                rss = resident_mb(proc.pid)
                t = asyncio.run(open_loop(port, request, factor * capacity, args.duration))
                runs[name] = {
                    "rate": factor * capacity,
                    "tally": {k: v for k, v in asdict(t).items() if k != "latencies"},
                    "p50_ms": float(np.percentile(t.latencies, 50)) * 1000 if t.latencies else float("nan"),
                    "p99_ms": p99(t.latencies),
                    "rss_mb_before": rss,
                    "rss_mb_after": resident_mb(proc.pid),
                }
                print(f"open loop {name}: {json.dumps(runs[name])}", flush=True)
            runs["p99_ratio"] = runs["twice"]["p99_ms"] / runs["light"]["p99_ms"]
            runs["p99_ratio_again"] = runs["twice_again"]["p99_ms"] / runs["light"]["p99_ms"]
            for name in ("twice", "twice_again"):
                run = runs[name]
                run["rss_growth"] = run["rss_mb_after"] / run["rss_mb_before"] - 1
            result["open_loop"] = runs
        finally:
            proc.terminate()
            proc.wait(30)
        result["impatient"] = []
        for wait in (0, None):
            run = impatient(repo, body, wait, args.duration, capacity, args.patience)
            print(f"impatient clients: {json.dumps(run)}", flush=True)
            result["impatient"].append(run)
    out = HERE / "out"
    out.mkdir(exist_ok=True)
    (out / "overload.json").write_text(json.dumps(result, indent=2))
    loop = result["open_loop"]
    after = result["impatient"][1]
    print(verdicts(loop, after))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
