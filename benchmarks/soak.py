"""Soak: steady load for a long time, zero errors, and resident memory that stays flat.

    make soak                    # 10 minutes; or: .venv/bin/python benchmarks/soak.py [--duration 600]

A server on the serving benchmark's tiny MLP; ``--clients`` closed-loop clients on kept-alive
connections send valid requests (JSON, one to four rows), and a side client, once a second, sends
requests that must be refused (malformed JSON, an unknown model, a shape over the limit), scrapes
``/metrics`` and reads the statistics. An error is a valid request that got anything but a 200, a
connection that closed with no answer, or a refused request that got anything but its 4xx.

Resident memory is sampled every two seconds; the first ``--warmup`` seconds (default: a tenth of
the run, at least 10 s) are left out, and growth is the median of the last five samples over the
median of the first five after warm-up. The issue's target: zero errors, growth under 5%. The exit
status is 1 when either misses; tests/server/test_soak.py runs a 60-second version in CI.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from overload import _answer, _request
from serving import environment, free_port, resident_mb, start_server, v2_body, write_tiny_mlp

HERE = Path(__file__).resolve().parent


async def soak(port: int, seconds: float, clients: int, pid: int, warmup: float) -> dict[str, Any]:
    rng = np.random.default_rng(3)
    valid = [
        _request("/v2/models/tiny/infer", v2_body({"x": rng.normal(size=(rows, 64)).astype(np.float32)}))
        for rows in (1, 2, 3, 4)
    ]
    refused = [
        (_request("/v2/models/tiny/infer", b'{"inputs": [oops'), {400}),
        (_request("/v2/models/nothere/infer", valid[0].partition(b"\r\n\r\n")[2]), {404}),
        (
            _request(
                "/v2/models/tiny/infer",
                json.dumps({"inputs": [{"name": "x", "datatype": "FP32", "shape": [2**40, 64], "data": []}]}).encode(),
            ),
            {400, 413},  # the shape is refused for its size or for the data it lacks
        ),
    ]
    counts = {"ok": 0, "refused_as_expected": 0, "errors": 0, "scrapes": 0}
    errors: list[str] = []
    samples: list[tuple[float, float]] = []
    start = time.perf_counter()
    end = start + seconds

    def error(what: str) -> None:
        counts["errors"] += 1
        if len(errors) < 20:
            errors.append(what)

    async def client(i: int) -> None:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        n = i
        while time.perf_counter() < end:
            writer.write(valid[n % len(valid)])
            n += 1
            try:
                status = await asyncio.wait_for(_answer(reader), 30)
            except (TimeoutError, asyncio.IncompleteReadError, ConnectionError) as e:
                error(f"valid request: {type(e).__name__}")
                writer.close()
                reader, writer = await asyncio.open_connection("127.0.0.1", port)
                continue
            if status == 200:
                counts["ok"] += 1
            else:
                error(f"valid request answered {status}")
        writer.close()

    async def side() -> None:
        while time.perf_counter() < end:
            for request, expected in refused:
                reader, writer = await asyncio.open_connection("127.0.0.1", port)
                writer.write(request)
                try:
                    status = await asyncio.wait_for(_answer(reader), 30)
                except (TimeoutError, asyncio.IncompleteReadError, ConnectionError) as e:
                    error(f"refused request: {type(e).__name__}")
                else:
                    if status in expected:
                        counts["refused_as_expected"] += 1
                    else:
                        error(f"expected {expected}, got {status}")
                writer.close()
            for path in (b"/metrics", b"/v2/models/tiny/stats"):
                reader, writer = await asyncio.open_connection("127.0.0.1", port)
                writer.write(b"GET %s HTTP/1.1\r\nHost: x\r\n\r\n" % path)
                try:
                    status = await asyncio.wait_for(_answer_chunked(reader), 30)
                except (TimeoutError, asyncio.IncompleteReadError, ConnectionError) as e:
                    error(f"{path.decode()}: {type(e).__name__}")
                else:
                    counts["scrapes"] += 1
                    if status != 200:
                        error(f"{path.decode()} answered {status}")
                writer.close()
            await asyncio.sleep(1.0)

    async def sampler() -> None:
        while time.perf_counter() < end:
            samples.append((time.perf_counter() - start, resident_mb(pid)))
            await asyncio.sleep(2.0)

    await asyncio.gather(*(client(i) for i in range(clients)), side(), sampler())
    after = [mb for t, mb in samples if t >= warmup]
    base = statistics.median(after[:5]) if len(after) >= 5 else float("nan")
    last = statistics.median(after[-5:]) if len(after) >= 5 else float("nan")
    return {
        "seconds": seconds,
        "clients": clients,
        **counts,
        "requests_per_s": counts["ok"] / seconds,
        "error_samples": errors,
        "warmup_s": warmup,
        "rss_mb_after_warmup": base,
        "rss_mb_end": last,
        "rss_growth": last / base - 1,
        "rss_samples": samples,
    }


async def _answer_chunked(reader: asyncio.StreamReader) -> int:
    """A response that may come chunked (the ASGI side streams /metrics): its status."""
    head = await reader.readuntil(b"\r\n\r\n")
    status = int(head.split(b" ", 2)[1])
    lower = head.lower()
    if b"transfer-encoding: chunked" in lower:
        while True:
            size = int((await reader.readuntil(b"\r\n")).strip(), 16)
            await reader.readexactly(size + 2)
            if size == 0:
                return status
    for line in lower.split(b"\r\n"):
        if line.startswith(b"content-length:"):
            await reader.readexactly(int(line.split(b":", 1)[1]))
    return status


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--duration", type=float, default=600.0, help="seconds of load (default: 10 minutes)")
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--warmup", type=float, default=None, help="seconds left out of the memory figure")
    parser.add_argument("--out", type=Path, default=HERE / "out" / "soak.json")
    args = parser.parse_args()
    warmup = args.warmup if args.warmup is not None else max(10.0, args.duration / 10)
    with tempfile.TemporaryDirectory() as tmp:
        repo = Path(tmp) / "repo"
        write_tiny_mlp(repo / "tiny" / "1" / "model.onnx")
        (repo / "tiny" / "model.toml").write_text("max_batch_size = 32\n[runtime]\nintra_op_threads = 1\n")
        port = free_port()
        body = v2_body({"x": np.zeros((1, 64), np.float32)})
        cmd = [
            sys.executable,
            "-m",
            "leanserve",
            "serve",
            str(repo),
            "--port",
            str(port),
            "--max-body-bytes",
            "1000000",
        ]
        proc, _ = start_server(cmd, f"http://127.0.0.1:{port}/v2/models/tiny/infer", body)
        try:
            result = asyncio.run(soak(port, args.duration, args.clients, proc.pid, warmup))
        finally:
            proc.terminate()
            result_code = proc.wait(30)
    result["exit_code"] = result_code
    result["environment"] = environment()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2))
    passed = result["errors"] == 0 and result["rss_growth"] < 0.05 and result_code == 0
    print(
        f"soak {args.duration:.0f} s, {args.clients} clients: {result['ok']} answered "
        f"({result['requests_per_s']:.0f}/s), "
        f"{result['refused_as_expected']} refused as expected, {result['errors']} errors, resident memory "
        f"{result['rss_mb_after_warmup']:.1f} -> {result['rss_mb_end']:.1f} MB ({result['rss_growth']:+.2%}) after "
        f"{warmup:.0f} s of warm-up, exit {result_code}: {'PASS' if passed else 'MISS'}"
    )
    for line in result["error_samples"]:
        print("  error:", line)
    return 0 if passed else 1


if __name__ == "__main__":
    raise SystemExit(main())
