"""Text in, embeddings out: ragged batching against padding to 128, server against client tokenization and
against an in-process loop.

    make bench-text                 # or: .venv/bin/python benchmarks/text.py [--duration 8]

On the demo's own evaluation sentences (mixed Korean, English and four more languages), with the
demo's all-MiniLM-L6-v2 (ONNX, fp32, 2 intra-op threads), one leanserve process serving:

* ``minilm``: sentences (BYTES) tokenized by its handler.py, batches padded to their longest member;
* ``minilm128``: the same handler padding every sentence to 128 tokens, inputs not ragged (what a
  server that cannot batch different lengths together has to do);

(both with shedding off, ``overload_wait_ms = 0``: wrk's connections are patient closed-loop
clients, so a 503 would only be an answer the client did not want; with it on, the padded model,
whose queue at c32 stands over the 100 ms target, answered 60% of its requests with a cheap 503, and
counting those as throughput made it look 2.7x faster than it is);
* ``minilm`` again, the client sending token ids it tokenized itself (the tokenizer on the client);
* beside it, the same text pipeline written as a LitServe service (benchmarks/peers/litserve_text_app.py:
  the same tokenizer.json and model.onnx, the same threads, LitServe's own batching up to 32, one
  worker), in its own venv (benchmarks/peer_envs.py); its embeddings are checked against leanserve's
  first. ``--no-litserve`` leaves it out; ``--text-in-only`` runs only the two text-in servers.

Load comes from wrk with a Lua script cycling through one request body per sentence, at
concurrency 1 and 32. Throughput is embeddings out: answers with status 200 per second (``ok_per_s``);
any other answer is counted in ``errors`` and the server's CPU is divided by the answered requests.
Beside them, in this process: the in-process loop (tokenize a batch of 32 with the same handler,
pad it, run it, the same engine settings) and the embeddings' agreement with
each sentence run alone, unpadded. Results are printed and written to benchmarks/out/text.json.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np
import tomli_w
from peer_envs import ENVS, ensure, venv_python
from serving import Load, environment, free_port, start_server, wrk_script

from leanserve.config import RuntimeOptions, load_model_config
from leanserve.demo import build_demo_repository, default_demo_dir, tokenize
from leanserve.demo.sentences import labelled_sentences
from leanserve.processing.offline import EndToEnd, read_requests
from leanserve.runtimes import load_runtime

HERE = Path(__file__).resolve().parent
OUT = HERE / "out"
PY = sys.executable
RAGGED_VS_PADDED_TARGET = 3.0  # text-in at c32, ragged over padded to 128
IN_PROCESS_TARGET = 0.9  # text-in at c32 over the in-process loop
COSINE_TARGET = 0.9999
PEER_COSINE = 0.999  # a peer's embeddings to leanserve's, before it is measured
WRK_TIMEOUT_S = 30.0
PEER_APP = HERE / "peers" / "litserve_text_app.py"
LEANSERVE_TEXT = "ragged, text in"
LITSERVE_TEXT = "LitServe, text in"


def repository(demo: Path, root: Path) -> Path:
    """``minilm`` as the demo builds it (text in, ragged) and ``minilm128`` (the same, padded to 128)."""
    source = demo / "minilm"
    for name in ("minilm", "minilm128"):
        (root / name / "1").mkdir(parents=True)
        shutil.copy(source / "1" / "model.onnx", root / name / "1" / "model.onnx")
        shutil.copy(source / "tokenizer.json", root / name / "tokenizer.json")
    shutil.copy(source / "handler.py", root / "minilm" / "handler.py")
    table = load_toml(source / "model.toml")
    table.pop("versions", None)
    for key in ("default_version", "version_policy", "platform"):
        table.pop(key, None)
    # Patient closed-loop clients: no shedding (see the module's docstring), for both models.
    table.setdefault("dynamic_batching", {})["overload_wait_ms"] = 0.0
    (root / "minilm" / "model.toml").write_text(tomli_w.dumps(table))
    padded = dict(table)
    padded["input"] = [{k: v for k, v in spec.items() if k not in ("pad_value", "mask")} for spec in table["input"]]
    (root / "minilm128" / "model.toml").write_text(tomli_w.dumps(padded))
    handler = (source / "handler.py").read_text()
    handler += "\n_tokenizer.enable_padding(pad_id=0, pad_token='[PAD]', length=MAX_LENGTH)  # every sentence: 128\n"
    (root / "minilm128" / "handler.py").write_text(handler)
    return root


def load_toml(path: Path) -> dict[str, Any]:
    import tomllib

    return tomllib.loads(path.read_text())


def text_body(sentence: str) -> str:
    body = {"inputs": [{"name": "text", "shape": [1], "datatype": "BYTES", "data": [sentence]}]}
    return json.dumps(body, ensure_ascii=False, separators=(",", ":"))


def ids_body(sentence: str) -> str:
    tokens = tokenize([sentence])
    inputs = [
        {"name": name, "shape": list(a.shape), "datatype": "INT64", "data": a.ravel().tolist()}
        for name, a in tokens.items()
    ]
    return json.dumps({"inputs": inputs}, separators=(",", ":"))


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process so far (all its threads)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def wrk_bodies(url: str, bodies: list[str], concurrency: int, duration: float) -> tuple[Load, int]:
    """wrk at ``concurrency``, each connection cycling through ``bodies`` (one request per body)."""
    script = 'wrk.method = "POST"\nwrk.headers["Content-Type"] = "application/json"\nbodies = {\n'
    script += "".join(f"[==[{body}]==],\n" for body in bodies)
    script += "}\ncounter = 0\nrequest = function()\n  counter = counter + 1\n"
    script += "  return wrk.format(nil, nil, nil, bodies[(counter % #bodies) + 1])\nend\n"
    # A padded request waits about 32 runs at c32 on a loaded machine: over wrk's default 2 s timeout.
    return wrk_script(url, script, concurrency, duration, timeout_s=WRK_TIMEOUT_S)


def answered(load: Load, total: int, cpu_seconds: float) -> dict[str, float]:
    """Embeddings out: answers with status 200 per second, and the server's CPU per answered request."""
    ok = max(total - load.errors, 0)
    return {
        "ok_per_s": load.requests_per_s * ok / max(total, 1),
        "server_cpu_ms_per_request": cpu_seconds * 1000 / max(ok, 1),
    }


def process_tree(pid: int) -> list[int]:
    """A process and all its descendants (LitServe runs its inference worker in a child process)."""
    tree, todo = [], [pid]
    while todo:
        p = todo.pop()
        tree.append(p)
        for task in Path(f"/proc/{p}/task").glob("*"):
            with contextlib.suppress(OSError):
                todo += [int(c) for c in (task / "children").read_text().split()]
    return tree


def tree_cpu_seconds(pid: int) -> float:
    total = 0.0
    for p in process_tree(pid):
        with contextlib.suppress(OSError):  # gone in between
            total += cpu_seconds(p)
    return total


def stop_tree(proc: subprocess.Popen[bytes]) -> None:
    """Terminate a server and its children (which outlive a terminated LitServe parent otherwise)."""
    tree = process_tree(proc.pid)
    for p in reversed(tree):
        with contextlib.suppress(ProcessLookupError):
            os.kill(p, 15)
    proc.wait(timeout=30)


def litserve_python() -> Path:
    """The LitServe peer's interpreter: an existing venv that has what the app imports is reused as is
    (another benchmark may be using it), else benchmarks/peer_envs.py makes it."""
    python = venv_python("litserve")
    if python.exists():
        check = subprocess.run([str(python), "-c", "import litserve, tokenizers, onnxruntime"], capture_output=True)
        if check.returncode == 0:
            return python
    return ensure(ENVS["litserve"])


def measure_peer(pid: int, infer_url: str, bodies: list[str], concurrency: int, seconds: float) -> dict[str, Any]:
    """One wrk run against a peer: as :func:`measure`, without the statistics a peer does not keep."""
    post_json(infer_url, bodies[0])  # answered after the requests wrk left behind: the queue is drained
    cpu = tree_cpu_seconds(pid)
    load, total = wrk_bodies(infer_url, bodies, concurrency, seconds)
    cpu = tree_cpu_seconds(pid) - cpu
    post_json(infer_url, bodies[0])  # the leftovers finished before the next run, whoever's it is
    return {**asdict(load), "requests": total, **answered(load, total, cpu)}


def engine_rows(stats_url: str) -> tuple[int, int]:
    """(rows inferred, engine runs) of a model so far, from its statistics."""
    with urllib.request.urlopen(stats_url, timeout=30) as response:
        model = json.loads(response.read())["model_stats"][0]
    return int(model["inference_count"]), int(model["execution_count"])


def post_json(url: str, body: str) -> dict[str, Any]:
    request = urllib.request.Request(url, body.encode(), {"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=60) as response:
        result: dict[str, Any] = json.loads(response.read())
        return result


def embedding_of(answer: dict[str, Any]) -> np.ndarray:
    out = answer["outputs"][0]
    return np.array(out["data"], dtype=np.float32).reshape(out["shape"])[0]


class InProcess:
    """The loop a server is compared with: tokenize a batch of 32 with the same handler, pad it, run it."""

    def __init__(self, model_dir: Path, sentences: list[str], batch: int = 32) -> None:
        self.e2e = EndToEnd.of(model_dir, load_model_config(model_dir))
        options = RuntimeOptions(intra_op_threads=2)  # as the served model.toml says
        self.runtime = load_runtime(model_dir / "1" / "model.onnx", "onnxruntime", options)
        requests = read_requests({"text": np.array(sentences)}, ["text"])
        self.batches = [requests[i : i + batch] for i in range(0, len(requests), batch)]
        self.e2e.run(self.runtime, self.batches[0])  # warm-up

    def measure(self, seconds: float) -> dict[str, float]:
        """Sentences per second, and CPU ms per sentence, over about ``seconds``."""
        done = 0
        start, cpu = time.perf_counter(), time.process_time()
        while time.perf_counter() - start < seconds:
            for b in self.batches:
                self.e2e.run(self.runtime, b)
                done += len(b)
                if time.perf_counter() - start >= seconds:
                    break
        elapsed, cpu = time.perf_counter() - start, time.process_time() - cpu
        return {"sentences_per_s": done / elapsed, "cpu_ms_per_sentence": cpu * 1000 / done}

    def close(self) -> None:
        self.runtime.close()


def measure(pid: int, model_url: str, bodies: list[str], concurrency: int, seconds: float) -> dict[str, Any]:
    """One wrk run against a model, with the server's CPU per request and the rows per engine run."""
    wait_idle(model_url.rsplit("/", 1)[0])
    rows, runs = engine_rows(f"{model_url}/stats")
    cpu = cpu_seconds(pid)
    load, total = wrk_bodies(f"{model_url}/infer", bodies, concurrency, seconds)
    cpu = cpu_seconds(pid) - cpu
    rows_after, runs_after = engine_rows(f"{model_url}/stats")
    return {
        **asdict(load),
        "requests": total,
        # The server's CPU per answered request (ONNX Runtime's spinning workers included): on a shared
        # machine, its throughput with the cores to itself would be about cores / this.
        **answered(load, total, cpu),
        "rows_per_engine_run": (rows_after - rows) / max(runs_after - runs, 1),
    }


def wait_idle(models_url: str, timeout: float = 60.0) -> None:
    """Until no model has a request in flight: wrk leaves up to 32 requests behind when it stops (the
    server finishes them), and their work must not be charged to the next run."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with urllib.request.urlopen(f"{models_url}/stats", timeout=30) as response:
            stats = json.loads(response.read())["model_stats"]
        if not any(m.get("in_flight") for m in stats):
            time.sleep(0.2)
            return
        time.sleep(0.1)


def median_of(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """Each numeric figure's median over the rounds."""
    return {k: float(np.median([r[k] for r in runs])) for k, v in runs[0].items() if isinstance(v, (int, float))}


def unpadded(model_dir: Path, sentences: list[str]) -> np.ndarray:
    """Each sentence's embedding run alone: no padding at all."""
    e2e = EndToEnd.of(model_dir)
    runtime = load_runtime(model_dir / "1" / "model.onnx", "onnxruntime", RuntimeOptions(intra_op_threads=2))
    try:
        requests = read_requests({"text": np.array(sentences)}, ["text"])
        return np.concatenate([e2e.run(runtime, [r])[0]["embedding"] for r in requests])
    finally:
        runtime.close()


def min_cosine(a: np.ndarray, b: np.ndarray) -> float:
    """The smallest cosine between matching rows of two embedding matrices."""
    return float((np.sum(a * b, axis=1) / np.linalg.norm(a, axis=1) / np.linalg.norm(b, axis=1)).min())


def client_tokenize_ms(sentences: list[str]) -> float:
    """What the client pays per sentence to tokenize it itself (the work the server's handler takes over)."""
    tokenize(sentences[:8])
    start = time.perf_counter()
    for s in sentences:
        tokenize([s])
    return (time.perf_counter() - start) * 1000.0 / len(sentences)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--duration", type=float, default=5.0, help="seconds per run (default 5)")
    parser.add_argument("--rounds", type=int, default=3, help="interleaved rounds, medians kept (default 3)")
    parser.add_argument("--demo", type=Path, default=None, help="the demo repository (built when missing)")
    parser.add_argument(
        "--litserve", action=argparse.BooleanOptionalAction, default=True, help="the LitServe text peer too (default)"
    )
    parser.add_argument(
        "--text-in-only",
        action="store_true",
        help="only leanserve's text-in runs (and LitServe's): no padded, token-id or in-process runs",
    )
    args = parser.parse_args()
    if shutil.which("wrk") is None:
        print("wrk is not installed: apt-get install -y wrk", file=sys.stderr)
        return 2
    demo = build_demo_repository(args.demo or default_demo_dir(), progress=print)
    sentences, _languages = labelled_sentences()
    lengths = [int(tokenize([s])["attention_mask"].sum()) for s in sentences]
    print(
        f"{len(sentences)} sentences, {np.mean(lengths):.1f} tokens on average (min {min(lengths)}, max {max(lengths)})"
    )
    results: dict[str, Any] = {"sentences": len(sentences), "mean_tokens": float(np.mean(lengths))}
    with tempfile.TemporaryDirectory(prefix="leanserve-bench-text-") as tmp:
        repo = repository(demo, Path(tmp) / "repo")
        port = free_port()
        base = f"http://127.0.0.1:{port}/v2/models"
        cmd = [PY, "-m", "leanserve", "serve", str(repo), "--port", str(port), "--failure-log-entries", "0"]
        proc, _cold = start_server(cmd, f"{base}/minilm/infer", text_body(sentences[0]).encode())
        peer: subprocess.Popen[bytes] | None = None
        try:
            text = [text_body(s) for s in sentences]
            ids = [ids_body(s) for s in sentences]
            # Agreement first: every sentence, 32 at a time (ragged batches of mixed lengths), to its unpadded self.
            with ThreadPoolExecutor(32) as pool:
                served = list(pool.map(lambda b: embedding_of(post_json(f"{base}/minilm/infer", b)), text))
            alone = unpadded(repo / "minilm", sentences)
            got = np.stack(served)
            results["min_cosine_to_unpadded"] = float(min_cosine(got, alone))
            # (label, model URL, request bodies): leanserve's models, then the LitServe peer
            contenders: list[tuple[str, str, list[str]]] = [(LEANSERVE_TEXT, f"{base}/minilm", text)]
            if not args.text_in_only:
                contenders += [
                    ("padded to 128, text in", f"{base}/minilm128", text),
                    ("ragged, token ids in (client tokenizes)", f"{base}/minilm", ids),
                ]
            if args.litserve:
                peer_port = free_port()
                peer_url = f"http://127.0.0.1:{peer_port}/v2/models/minilm"
                peer_cmd = [str(litserve_python()), str(PEER_APP), "--onnx", str(repo / "minilm" / "1" / "model.onnx")]
                peer_cmd += ["--tokenizer", str(repo / "minilm" / "tokenizer.json"), "--threads", "2"]
                peer_cmd += ["--port", str(peer_port), "--max-batch", "32", "--window-ms", "1"]
                peer, _ = start_server(peer_cmd, f"{peer_url}/infer", text[0].encode())
                with ThreadPoolExecutor(32) as pool:
                    theirs = np.stack(list(pool.map(lambda b: embedding_of(post_json(f"{peer_url}/infer", b)), text)))
                results["litserve_min_cosine_to_leanserve"] = agree = float(min_cosine(theirs, got))
                print(f"LitServe's embeddings against leanserve's: min cosine {agree:.6f}")
                if agree < PEER_COSINE:
                    raise RuntimeError(f"LitServe's embeddings differ from leanserve's (min cosine {agree:.6f})")
                contenders.append((LITSERVE_TEXT, peer_url, text))
            for _label, url, bodies in contenders:
                wrk_bodies(f"{url}/infer", bodies, 8, 1.0)  # warm-up
            in_proc = None if args.text_in_only else InProcess(repo / "minilm", sentences)
            # Interleaved rounds, medians kept: the machine is shared, and its load drifts over minutes.
            runs: dict[tuple[str, int], list[dict[str, Any]]] = {}
            loop_runs: list[dict[str, float]] = []
            for round_ in range(1, args.rounds + 1):
                for c in (1, 32):
                    for label, url, bodies in contenders:
                        if label == LITSERVE_TEXT and peer is not None:
                            figures = measure_peer(peer.pid, f"{url}/infer", bodies, c, args.duration)
                        else:
                            figures = measure(proc.pid, url, bodies, c, args.duration)
                        runs.setdefault((label, c), []).append(figures)
                        print(
                            f"round {round_} {label:42s} c{c:<3d} {figures['ok_per_s']:8.1f} ok/s  "
                            f"p50 {figures['p50_ms']:7.2f} ms  p99 {figures['p99_ms']:7.2f} ms  "
                            f"errors {figures['errors']}  server CPU {figures['server_cpu_ms_per_request']:.2f} ms/req"
                            + (
                                f"  {figures['rows_per_engine_run']:.1f} rows/run"
                                if "rows_per_engine_run" in figures
                                else ""
                            )
                        )
                if in_proc is not None:
                    loop_runs.append(in_proc.measure(args.duration))
                    print(f"round {round_} in-process loop: {loop_runs[-1]['sentences_per_s']:.1f} sentences/s")
            if in_proc is not None:
                in_proc.close()
            loads = {label: [median_of(runs[(label, c)]) for c in (1, 32)] for label, _url, _bodies in contenders}
            results["loads"] = loads
            results["rounds"] = {f"{label} c{c}": figures for (label, c), figures in runs.items()}
        finally:
            if peer is not None:
                stop_tree(peer)
            proc.terminate()
            proc.wait(timeout=30)
        if loop_runs:
            results["in_process"] = {**median_of(loop_runs), "batch": 32}
        results["client_tokenize_ms_per_sentence"] = client_tokenize_ms(sentences)
    c32 = {label: runs[1]["ok_per_s"] for label, runs in loads.items()}
    cpu32 = {label: runs[1]["server_cpu_ms_per_request"] for label, runs in loads.items()}
    ragged = c32[LEANSERVE_TEXT]
    ratios: dict[str, float] = {}
    targets: dict[str, bool] = {
        f"cosine to unpadded >= {COSINE_TARGET}": results["min_cosine_to_unpadded"] >= COSINE_TARGET
    }
    if not args.text_in_only:
        padded = c32["padded to 128, text in"]
        loop = results["in_process"]["sentences_per_s"]
        loop_cpu = results["in_process"]["cpu_ms_per_sentence"]
        ratios |= {
            "ragged_over_padded_c32": ragged / padded,
            "text_in_over_in_process_loop_c32": ragged / loop,
            "server_tokenizes_over_client_tokenizes_c32": ragged / c32["ragged, token ids in (client tokenizes)"],
            # The same comparisons in CPU per sentence (lower is better, so the ratios are inverted):
            # robust to other work on a shared machine, which wall-clock rates are not.
            "cpu_ragged_over_padded_c32": cpu32["padded to 128, text in"] / cpu32[LEANSERVE_TEXT],
            "cpu_text_in_over_in_process_loop_c32": loop_cpu / cpu32[LEANSERVE_TEXT],
        }
        targets |= {
            f"ragged >= {RAGGED_VS_PADDED_TARGET}x padded at c32": ragged / padded >= RAGGED_VS_PADDED_TARGET,
            f"text-in >= {IN_PROCESS_TARGET} of the in-process loop at c32": ragged / loop >= IN_PROCESS_TARGET,
            f"(CPU) ragged >= {RAGGED_VS_PADDED_TARGET}x padded at c32": ratios["cpu_ragged_over_padded_c32"]
            >= RAGGED_VS_PADDED_TARGET,
            f"(CPU) text-in >= {IN_PROCESS_TARGET} of the in-process loop at c32": ratios[
                "cpu_text_in_over_in_process_loop_c32"
            ]
            >= IN_PROCESS_TARGET,
        }
        print(
            f"in-process loop (batches of 32): {loop:.1f} sentences/s; "
            f"client tokenization {results['client_tokenize_ms_per_sentence']:.3f} ms/sentence"
        )
    if LITSERVE_TEXT in loads:
        for i, c in enumerate((1, 32)):
            ours, theirs = loads[LEANSERVE_TEXT][i], loads[LITSERVE_TEXT][i]
            ratios[f"leanserve_over_litserve_c{c}"] = ours["ok_per_s"] / theirs["ok_per_s"]
            # CPU per request, inverted (lower is better): the figure a shared machine disturbs least.
            ratios[f"cpu_leanserve_over_litserve_c{c}"] = (
                theirs["server_cpu_ms_per_request"] / ours["server_cpu_ms_per_request"]
            )
    results["ratios"] = ratios
    results["targets"] = targets
    results["environment"] = environment()
    results["load_average"] = os.getloadavg()
    print(
        f"\n{'medians of ' + str(args.rounds) + ' rounds':42s} {'c':>3s} {'ok/s':>8s} {'errors':>6s} {'p50 ms':>8s} "
        f"{'p99 ms':>8s} {'CPU ms/req':>10s} {'rows/run':>8s}"
    )
    for label, figures in loads.items():
        for c, f in zip((1, 32), figures, strict=True):
            print(
                f"{label:42s} {c:3d} {f['ok_per_s']:8.1f} {f['errors']:6.0f} {f['p50_ms']:8.2f} {f['p99_ms']:8.2f} "
                f"{f['server_cpu_ms_per_request']:10.2f} {f.get('rows_per_engine_run', float('nan')):8.1f}"
            )
    for name, value in results["ratios"].items():
        print(f"{name}: {value:.2f}")
    print(f"min cosine to unpadded: {results['min_cosine_to_unpadded']:.6f}")
    for target, ok in results["targets"].items():
        print(f"{'PASS' if ok else 'MISS'}  {target}")
    OUT.mkdir(exist_ok=True)
    (OUT / "text.json").write_text(json.dumps(results, indent=2, default=str))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
