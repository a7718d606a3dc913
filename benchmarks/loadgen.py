"""leanserve bench against wrk and hey on the same workload: does our load generator measure the server?

    make bench-loadgen              # or: .venv/bin/python benchmarks/loadgen.py [--duration 3] [--rounds 7] [--races 5]

One leanserve server (the tiny MLP of serving.py, one ONNX Runtime thread) in its own process; the
same request bytes (V2 JSON, one item) sent by ``wrk -t1``, ``hey`` and ``leanserve bench`` (each
its own process), alternating tool by tool within each round so that machine noise falls on all
three alike, at concurrency 32 and 1; then races: wrk and leanserve bench at the same time, 16
connections each, against the one server (both live through the same noise). Reported: each
tool's throughput and p50/p99, the ratio of leanserve bench to wrk and to hey per round and their
median, each tool's own CPU use per request (from the kernel's accounting of the child process),
and the races' ratios. Targets (issue 14): at c32, bench >= 0.8x wrk; throughput within 10% of
wrk's and hey's. Written to benchmarks/out/loadgen.json.
"""

from __future__ import annotations

import argparse
import json
import re
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
from serving import PY, free_port, start_server, tiny_repository

from leanserve.loadgen.inputs import TensorSpec, encode_body
from leanserve.timing import environment, load_average

HERE = Path(__file__).resolve().parent
LEANSERVE = str(Path(PY).with_name("leanserve"))


@dataclass(frozen=True, slots=True)
class Run:
    tool: str
    concurrency: int
    requests_per_s: float
    p50_ms: float
    p99_ms: float
    errors: int
    cpu_s: float  # the tool's own CPU time (user + system)
    seconds: float

    @property
    def cpu_us_per_request(self) -> float:
        return self.cpu_s / max(1.0, self.requests_per_s * self.seconds) * 1e6


def _children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def _timed(cmd: list[str]) -> tuple[str, float]:
    before = _children_cpu()
    out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout
    return out, _children_cpu() - before


def _unit_ms(value: str, unit: str) -> float:
    return float(value) * {"us": 1e-3, "ms": 1.0, "s": 1e3, "secs": 1e3}[unit]


def wrk(url: str, script: Path, concurrency: int, seconds: int) -> Run:
    out, cpu = _timed(["wrk", "-t1", f"-c{concurrency}", f"-d{seconds}s", "--latency", "-s", str(script), url])
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))  # type: ignore[union-attr]
    pct = {
        m.group(1): _unit_ms(m.group(2), m.group(3))
        for m in re.finditer(r"^\s+(50|99)%\s+([\d.]+)(us|ms|s)", out, re.M)
    }
    errors = int(m.group(1)) if (m := re.search(r"Non-2xx or 3xx responses: (\d+)", out)) else 0
    return Run("wrk", concurrency, rps, pct.get("50", float("nan")), pct.get("99", float("nan")), errors, cpu, seconds)


def hey(url: str, body: Path, concurrency: int, seconds: int) -> Run:
    cmd = ["hey", "-z", f"{seconds}s", "-c", str(concurrency), "-m", "POST", "-T", "application/json"]
    out, cpu = _timed([*cmd, "-D", str(body), url])
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))  # type: ignore[union-attr]
    pct = {m.group(1): float(m.group(2)) * 1e3 for m in re.finditer(r"^\s+(50|99)%+ in ([\d.]+) secs", out, re.M)}
    codes = {int(c): int(n) for c, n in re.findall(r"\[(\d+)\]\s+(\d+) responses", out)}
    errors = sum(n for c, n in codes.items() if c != 200)
    return Run("hey", concurrency, rps, pct.get("50", float("nan")), pct.get("99", float("nan")), errors, cpu, seconds)


def bench(url: str, data: Path, concurrency: int, seconds: int) -> Run:
    # Three windows in the same time wrk and hey get: the client is compared, not the stability rule.
    cmd = [LEANSERVE, "bench", url, "--model", "tiny", "--concurrency", str(concurrency), "--data", str(data)]
    cmd += ["--duration", f"{seconds}s", "--window", f"{seconds / 3:.3f}s", "--max-windows", "3", "--warmup", "0"]
    out = subprocess.run([*cmd, "--json", "--quiet"], capture_output=True, text=True, check=True).stdout
    r = json.loads(out)["results"][0]
    errors = sum(r["errors"].values())
    # Its own CPU figure covers the measurement only: the interpreter's start and imports (about a
    # second of CPU) would otherwise be charged to the requests.
    cpu = r["client_cpu"] * r["duration_s"]
    return Run("leanserve bench", concurrency, r["throughput"], r["p50_ms"], r["p99_ms"], errors, cpu, r["duration_s"])


def race(base: str, url: str, script: Path, data: Path, connections: int, seconds: int) -> tuple[float, float]:
    """wrk and leanserve bench at the same time, ``connections`` each, against one server: (bench, wrk) req/s.

    The server answers whichever connection is ready, so two clients that keep up get equal shares;
    a client that is slower to send its next request gets less. Both live through the same noise at
    the same moment, which alternating runs cannot promise on a shared machine.
    """
    warmup = 1.0
    cmd = [LEANSERVE, "bench", base, "--model", "tiny", "--concurrency", str(connections), "--data", str(data)]
    cmd += ["--duration", f"{seconds}s", "--window", f"{seconds / 3:.3f}s", "--max-windows", "3"]
    ours = subprocess.Popen([*cmd, "--warmup", f"{warmup}s", "--json"], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    assert ours.stderr is not None
    for line in ours.stderr:  # its first line comes when its requests are ready, just before its warm-up
        if b"requests encoded" in line:
            break
    theirs = subprocess.run(
        ["wrk", "-t1", f"-c{connections}", f"-d{round(seconds + warmup)}s", "-s", str(script), url],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    out, _ = ours.communicate(timeout=120)
    bench_rps = float(json.loads(out)["results"][0]["throughput"])
    wrk_rps = float(re.search(r"Requests/sec:\s+([\d.]+)", theirs).group(1))  # type: ignore[union-attr]
    return bench_rps, wrk_rps


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    # Short rounds, many of them: on a shared machine the noise comes in bursts of seconds, and a
    # burst then spoils one round of one tool rather than a tool's whole figure.
    parser.add_argument("--duration", type=int, default=3, help="seconds per tool per round")
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--concurrency", default="32,1")
    parser.add_argument("--races", type=int, default=5, help="rounds of wrk and bench together, 16 connections each")
    parser.add_argument("--out", type=Path, default=HERE / "out" / "loadgen.json")
    args = parser.parse_args()
    missing = [t for t in ("wrk", "hey") if shutil.which(t) is None]
    if missing:
        print(f"missing {' '.join(missing)}: apt-get install -y {' '.join(missing)}", file=sys.stderr)
        return 2
    x = np.random.default_rng(1).normal(size=(1, 64)).astype(np.float32)
    body, _ = encode_body({"x": x}, [TensorSpec("x", "FP32", (-1, 64))], binary=False)
    runs: list[Run] = []
    races: list[tuple[float, float]] = []
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        repo = tiny_repository(tmp / "repo")
        np.savez(tmp / "x.npz", x=x)
        (tmp / "body.json").write_bytes(body)
        script = tmp / "post.lua"
        script.write_text(
            'wrk.method = "POST"\nwrk.headers["Content-Type"] = "application/json"\n'
            f"wrk.body = {json.dumps(body.decode())}\n"
        )
        port = free_port()
        url = f"http://127.0.0.1:{port}/v2/models/tiny/infer"
        cmd = [LEANSERVE, "serve", str(repo), "--port", str(port), "--log-level", "warning"]
        proc, _ = start_server(cmd, url, body)
        try:
            wrk(url, script, 8, 1)  # warm-up
            for concurrency in [int(c) for c in args.concurrency.split(",")]:
                for r in range(args.rounds):
                    tools = [
                        lambda c=concurrency: wrk(url, script, c, args.duration),
                        lambda c=concurrency: hey(url, tmp / "body.json", c, args.duration),
                        lambda c=concurrency: bench(f"http://127.0.0.1:{port}", tmp / "x.npz", c, args.duration),
                    ]
                    order = tools if r % 2 == 0 else tools[::-1]  # neither end of the round always first
                    for tool in order:
                        run = tool()
                        runs.append(run)
                        print(
                            f"c{run.concurrency} round {r + 1}: {run.tool:16} {run.requests_per_s:9,.0f} req/s "
                            f"p50 {run.p50_ms:.3f} ms p99 {run.p99_ms:.3f} ms errors {run.errors} "
                            f"client CPU {run.cpu_us_per_request:.1f} us/request",
                            flush=True,
                        )
            for r in range(args.races):
                ours, theirs = race(f"http://127.0.0.1:{port}", url, script, tmp / "x.npz", 16, args.duration)
                races.append((ours, theirs))
                print(f"race {r + 1}: leanserve bench {ours:,.0f} req/s, wrk {theirs:,.0f} ({ours / theirs:.2f}x)")
        finally:
            proc.terminate()
            proc.wait(timeout=30)
    summary = summarize(runs, args.rounds)
    print_summary(summary)
    if races:
        ratios = [b / w for b, w in races]
        summary["race"] = {"bench_over_wrk": ratios, "median_bench_over_wrk": statistics.median(ratios)}
        print(
            f"\nwrk and leanserve bench together, 16 connections each: bench / wrk per round "
            f"{_fmt(ratios)}, median {statistics.median(ratios):.2f}"
        )
    args.out.parent.mkdir(parents=True, exist_ok=True)
    doc = {
        "date": time.strftime("%Y-%m-%d %H:%M:%S %z"),
        "load_average_after": load_average(),
        "environment": asdict(environment()),
        "runs": [{**asdict(r), "cpu_us_per_request": r.cpu_us_per_request} for r in runs],
        "summary": summary,
    }
    args.out.write_text(json.dumps(doc, indent=1))
    print(f"\nwritten to {args.out}")
    return 0


def summarize(runs: list[Run], rounds: int) -> dict[str, dict[str, object]]:
    out: dict[str, dict[str, object]] = {}
    for c in sorted({r.concurrency for r in runs}, reverse=True):
        of = {t: [r for r in runs if r.concurrency == c and r.tool == t] for t in ("wrk", "hey", "leanserve bench")}
        per_round = {
            other: [b.requests_per_s / o.requests_per_s for b, o in zip(of["leanserve bench"], of[other], strict=True)]
            for other in ("wrk", "hey")
        }
        out[f"c{c}"] = {
            "median_req_s": {t: statistics.median(r.requests_per_s for r in rs) for t, rs in of.items()},
            "median_p50_ms": {t: statistics.median(r.p50_ms for r in rs) for t, rs in of.items()},
            "median_p99_ms": {t: statistics.median(r.p99_ms for r in rs) for t, rs in of.items()},
            "cpu_us_per_request": {t: statistics.median(r.cpu_us_per_request for r in rs) for t, rs in of.items()},
            "bench_over_wrk": per_round["wrk"],
            "bench_over_hey": per_round["hey"],
            "median_bench_over_wrk": statistics.median(per_round["wrk"]),
            "median_bench_over_hey": statistics.median(per_round["hey"]),
            "cpu_per_request_bench_over_wrk": statistics.median(r.cpu_us_per_request for r in of["leanserve bench"])
            / statistics.median(r.cpu_us_per_request for r in of["wrk"]),
        }
    return out


def print_summary(summary: dict[str, dict[str, object]]) -> None:
    print()
    for level, s in summary.items():
        rps, cpu = s["median_req_s"], s["cpu_us_per_request"]
        p50, p99 = s["median_p50_ms"], s["median_p99_ms"]
        assert isinstance(rps, dict) and isinstance(cpu, dict) and isinstance(p50, dict) and isinstance(p99, dict)
        print(f"{level}: {'tool':16} {'req/s':>9} {'p50 ms':>8} {'p99 ms':>8} {'client us/req':>14}")
        for tool in rps:
            print(f"{'':5}{tool:16} {rps[tool]:9,.0f} {p50[tool]:8.3f} {p99[tool]:8.3f} {cpu[tool]:14.1f}")
        wrk_ratio, hey_ratio = s["median_bench_over_wrk"], s["median_bench_over_hey"]
        assert isinstance(wrk_ratio, float) and isinstance(hey_ratio, float)
        print(f"     bench / wrk per round {_fmt(s['bench_over_wrk'])}, median {wrk_ratio:.2f}")
        print(f"     bench / hey per round {_fmt(s['bench_over_hey'])}, median {hey_ratio:.2f}")
        if level == "c32":
            print(
                f"  {'PASS' if wrk_ratio >= 0.8 else 'MISS'}  c32: leanserve bench >= 0.8x wrk -t1 ({wrk_ratio:.2f}x)"
            )
        for name, ratio in (("wrk", wrk_ratio), ("hey", hey_ratio)):
            ok = abs(ratio - 1) <= 0.10
            print(f"  {'PASS' if ok else 'MISS'}  {level}: throughput within 10% of {name} ({ratio:.2f}x)")


def _fmt(values: object) -> str:
    assert isinstance(values, list)
    return " ".join(f"{v:.2f}" for v in values)


if __name__ == "__main__":
    sys.exit(main())
