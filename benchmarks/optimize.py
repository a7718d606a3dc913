"""Optimize benchmark: what ``leanserve optimize`` buys over plain ONNX Runtime fp32, side by side in one run.

    .venv/bin/python benchmarks/optimize.py [--skip-minilm] [--skip-resnet] [--resnet-size 224]

Three cases, each optimized into its own temporary repository by ``leanserve.optimize``:

* ``digits``: the demo CNN, metric accuracy against the labels, budget 0.5 point;
* ``minilm``: the demo all-MiniLM-L6-v2, metric mean cosine to the original, budget 0.99,
  objective throughput (the target is throughput at batch 32); the whole run is timed;
* ``resnet``: a ResNet-18-like CNN built in torch with random weights on random images
  (speed only: metric top-1 agreement with the original, a loose 20-point budget).

Then the original ONNX file under ONNX Runtime fp32 and the variant optimize chose (loaded as
the repository says, with its engine) are timed against each other in this process,
interleaved round by round with warm-up, at the same thread count: p50 at batch 1 and
throughput at batch 32. The metric is recomputed on optimize's own held-out split. Each target
is printed PASS or MISS; results go to benchmarks/out/optimize.json.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from leanserve.config import RuntimeOptions, load_model_config
from leanserve.optimization import OptimizeResult, optimize
from leanserve.optimization.assess import predict
from leanserve.optimization.data import from_arrays, split
from leanserve.optimization.metrics import cosine_per_example
from leanserve.optimization.selection import choose
from leanserve.optimization.sweep import tile
from leanserve.repository import resolve_version
from leanserve.runtimes import Runtime, load_runtime
from leanserve.runtimes.threads import available_cores
from leanserve.timing import environment as measured_environment
from leanserve.timing import timed_calls

HERE = Path(__file__).resolve().parent
BIG_BATCH = 32
ROUNDS = 7
ROUND_SECONDS = 0.4  # per engine per round: long enough to average out the scheduler's noise

# The targets.
DIGITS_SPEEDUP_B1 = 2.0
DIGITS_MAX_POINTS_LOST = 0.5
MINILM_SPEEDUP_B32 = 1.7
MINILM_COSINE = 0.99
MINILM_RUN_SECONDS = 300.0
RESNET_SPEEDUP = 3.0


# ---- timing ----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Timing:
    batch_size: int
    p50_ms: float
    throughput: float  # inferences per second at p50
    round_medians_ms: list[float]
    calls: int


@dataclass(frozen=True, slots=True)
class Comparison:
    batch_size: int
    baseline: Timing
    chosen: Timing
    speedup: float  # baseline p50 / chosen p50
    speedup_rounds: tuple[float, float, float]  # min / median / max of the per-round ratios


def _calls_per_round(call: Callable[[], object]) -> int:
    for _ in range(3):  # warm-up: first calls allocate arenas and pick kernels
        call()
    once = max(timed_calls(call, 1)[0] / 1000.0, 1e-6)
    return max(3, min(2000, round(ROUND_SECONDS / once)))


def side_by_side(baseline: Runtime, chosen: Runtime, feed: Mapping[str, np.ndarray]) -> Comparison:
    """Time both engines on ``feed``, alternating rounds so machine noise falls on both alike."""
    calls = {
        "baseline": lambda: baseline.run(feed),
        "chosen": lambda: chosen.run(feed),
    }
    per_round = {name: _calls_per_round(call) for name, call in calls.items()}
    samples: dict[str, list[float]] = {name: [] for name in calls}
    medians: dict[str, list[float]] = {name: [] for name in calls}
    for r in range(ROUNDS):
        # Swap who goes first every round: neither engine always inherits the other's cache state.
        order = list(calls) if r % 2 == 0 else list(reversed(calls))
        for name in order:
            this_round = timed_calls(calls[name], per_round[name])
            samples[name].extend(this_round)
            medians[name].append(statistics.median(this_round))
    batch = len(next(iter(feed.values())))
    timings = {
        name: Timing(
            batch_size=batch,
            p50_ms=statistics.median(samples[name]),
            throughput=batch * 1000.0 / statistics.median(samples[name]),
            round_medians_ms=[round(m, 5) for m in medians[name]],
            calls=len(samples[name]),
        )
        for name in calls
    }
    ratios = sorted(b / c for b, c in zip(medians["baseline"], medians["chosen"], strict=True))
    return Comparison(
        batch_size=batch,
        baseline=timings["baseline"],
        chosen=timings["chosen"],
        speedup=timings["baseline"].p50_ms / timings["chosen"].p50_ms,
        speedup_rounds=(ratios[0], statistics.median(ratios), ratios[-1]),
    )


# ---- one case --------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Loaded:
    """The original and the chosen version of an optimized model, as the repository describes them."""

    original: Path
    chosen: Path
    platform: str
    runtime: RuntimeOptions
    threads: int
    output: str  # the first output, the one the metric reads


def loaded_versions(result: OptimizeResult, threads: int | None) -> Loaded:
    model_dir = result.repository / result.model
    config = load_model_config(model_dir)
    chosen = resolve_version(model_dir, config, result.default_version)
    original_version = result.original.version
    if original_version is None:
        raise RuntimeError("optimize did not write the original as a version")
    original = resolve_version(model_dir, config, original_version)
    runtime = chosen.config.runtime
    # Both engines get the same threads: the plan's for the chosen variant unless told otherwise.
    n = threads or runtime.intra_op_threads or available_cores()
    return Loaded(original.path, chosen.path, chosen.config.platform, runtime, n, chosen.config.outputs[0].name)


def compare(loaded: Loaded, timing_inputs: Mapping[str, np.ndarray]) -> dict[int, Comparison]:
    baseline = load_runtime(loaded.original, "onnxruntime", RuntimeOptions(intra_op_threads=loaded.threads))
    chosen = load_runtime(loaded.chosen, loaded.platform, replace(loaded.runtime, intra_op_threads=loaded.threads))
    try:
        return {b: side_by_side(baseline, chosen, tile(timing_inputs, b)) for b in (1, BIG_BATCH)}
    finally:
        baseline.close()
        chosen.close()


def outputs_on(loaded: Loaded, inputs: Mapping[str, np.ndarray], output: str) -> tuple[np.ndarray, np.ndarray]:
    """The original's and the chosen variant's ``output`` on ``inputs``."""
    results = []
    for path, plat, options in (
        (loaded.original, "onnxruntime", RuntimeOptions(intra_op_threads=loaded.threads)),
        (loaded.chosen, loaded.platform, replace(loaded.runtime, intra_op_threads=loaded.threads)),
    ):
        runtime = load_runtime(path, plat, options)
        try:
            results.append(predict(runtime, from_arrays(inputs), BIG_BATCH)[output])
        finally:
            runtime.close()
    return results[0], results[1]


def variant_rows(result: OptimizeResult) -> list[dict[str, Any]]:
    rows = []
    for v in (result.original, *result.variants):
        m = v.measurements
        rows.append(
            {
                "variant": v.name,
                "status": v.status,
                "score": v.score.value if v.score else None,
                "worst": v.score.worst if v.score else None,
                "p50_ms_b1": m.latency.p50_ms if m else None,
                "throughput": m.throughput if m else None,
                "throughput_batch": m.throughput_batch if m else None,
                "threads": v.plan.threads if v.plan else None,
                "speedup_b1": v.speedup,
                "sweep": [[pt.threads, pt.batch_size, round(pt.latency_ms, 5)] for pt in v.sweep],
                "reason": v.reason if v.status != "accepted" else "",
            }
        )
    return rows


def summary(
    name: str,
    result: OptimizeResult,
    seconds: float,
    loaded: Loaded,
    comparisons: dict[int, Comparison],
    metric: dict[str, Any],
    targets: list[dict[str, Any]],
) -> dict[str, Any]:
    chosen = result.variant(result.chosen)
    latency_choice = choose(result.original, result.variants, "latency").name
    throughput_choice = choose(result.original, result.variants, "throughput").name
    report_b1 = (
        result.original.measurements.latency.p50_ms / chosen.measurements.latency.p50_ms
        if result.original.measurements and chosen.measurements
        else None
    )
    report_tp = (
        chosen.measurements.throughput / result.original.measurements.throughput
        if result.original.measurements and chosen.measurements
        else None
    )
    return {
        "case": name,
        "optimize_seconds": seconds,
        "objective": result.objective,
        "chosen": result.chosen,
        "would_choose": {"latency": latency_choice, "throughput": throughput_choice},
        "chosen_platform": loaded.platform,
        "chosen_providers": list(chosen.measurements.providers) if chosen.measurements else [],
        "threads": loaded.threads,
        "message": result.message,
        "report_speedup_b1": report_b1,
        "report_throughput_ratio_best_batch": report_tp,
        "side_by_side": {str(b): asdict(c) for b, c in comparisons.items()},
        "metric": metric,
        "variants": variant_rows(result),
        "targets": targets,
    }


def target(text: str, value: float | None, limit: float, at_least: bool = True) -> dict[str, Any]:
    met = value is not None and (value >= limit if at_least else value <= limit)
    return {"target": text, "value": value, "limit": limit, "met": met}


def run_optimize(label: str, **kwargs: Any) -> tuple[OptimizeResult, float]:
    print(f"\n== optimize {label}", flush=True)
    t0 = time.perf_counter()
    result = optimize(progress=lambda m: print(f"   {m}", flush=True), **kwargs)
    seconds = time.perf_counter() - t0
    print(f"   {result.message} ({seconds:.1f} s)", flush=True)
    return result, seconds


def held_out(arrays: Mapping[str, np.ndarray], labels: str | None) -> np.ndarray:
    """The evaluation indices optimize used (same split function, fraction and seed as its defaults)."""
    return split(from_arrays(dict(arrays), labels), 0.25, seed=0).evaluation_indices


# ---- the cases -------------------------------------------------------------------------------


def digits_case(demo: Path, work: Path, threads: int | None) -> dict[str, Any]:
    with np.load(demo / "digits" / "eval.npz") as data:
        images, labels = data["image"], data["labels"]
    arrays = {"image": images, "labels": labels}
    result, seconds = run_optimize(
        "digits",
        model=demo / "digits" / "1" / "model.onnx",
        data=arrays,
        labels="labels",
        metric="accuracy",
        budget=f"{DIGITS_MAX_POINTS_LOST}%",
        repo=work / "repo",
        name="digits",
    )
    loaded = loaded_versions(result, threads)
    ev = held_out(arrays, "labels")
    comparisons = compare(loaded, {"image": images[ev][:64]})
    ref, got = outputs_on(loaded, {"image": images[ev]}, "logits")
    acc_ref = float(np.mean(ref.argmax(1) == labels[ev]))
    acc_got = float(np.mean(got.argmax(1) == labels[ev]))
    lost = (acc_ref - acc_got) * 100.0
    metric = {
        "name": "accuracy",
        "examples": len(ev),
        "original": acc_ref,
        "chosen": acc_got,
        "points_lost": lost,
        "report_original": result.original.score.value if result.original.score else None,
        "report_chosen": result.variant(result.chosen).score.value if result.variant(result.chosen).score else None,
    }
    targets = [
        target(f"digits: >= {DIGITS_SPEEDUP_B1}x ORT fp32 at batch 1", comparisons[1].speedup, DIGITS_SPEEDUP_B1),
        target(f"digits: <= {DIGITS_MAX_POINTS_LOST} point accuracy lost", lost, DIGITS_MAX_POINTS_LOST, False),
    ]
    return summary("digits", result, seconds, loaded, comparisons, metric, targets)


def minilm_case(demo: Path, work: Path, threads: int | None) -> dict[str, Any]:
    with np.load(demo / "minilm" / "eval.npz") as data:
        arrays = {"input_ids": data["input_ids"], "attention_mask": data["attention_mask"]}
        languages = data["language"]
    result, seconds = run_optimize(
        "minilm",
        model=demo / "minilm" / "1" / "model.onnx",
        data=arrays,
        metric="cosine",
        budget=str(MINILM_COSINE),
        objective="throughput",
        repo=work / "repo",
        name="minilm",
    )
    loaded = loaded_versions(result, threads)
    ev = held_out(arrays, None)
    evaluation = {k: v[ev] for k, v in arrays.items()}
    comparisons = compare(loaded, {k: v[:64] for k, v in evaluation.items()})
    ref, got = outputs_on(loaded, evaluation, "embedding")
    cos = cosine_per_example(ref, got)
    by_language = {
        str(lang): {"examples": int(np.sum(mask)), "mean": float(cos[mask].mean()), "worst": float(cos[mask].min())}
        for lang in sorted(set(languages[ev].tolist()))
        for mask in [languages[ev] == lang]
    }
    chosen = result.variant(result.chosen)
    metric = {
        "name": "cosine",
        "examples": len(ev),
        "mean": float(cos.mean()),
        "worst": float(cos.min()),
        "by_language": by_language,
        "report_mean": chosen.score.value if chosen.score else None,
        "report_worst": chosen.score.worst if chosen.score else None,
    }
    targets = [
        target(
            f"minilm: >= {MINILM_SPEEDUP_B32}x ORT fp32 throughput at batch {BIG_BATCH}",
            comparisons[BIG_BATCH].speedup,
            MINILM_SPEEDUP_B32,
        ),
        target(f"minilm: mean cosine >= {MINILM_COSINE}", float(cos.mean()), MINILM_COSINE),
        target(f"minilm: whole optimize run < {MINILM_RUN_SECONDS:.0f} s", seconds, MINILM_RUN_SECONDS, False),
    ]
    return summary("minilm", result, seconds, loaded, comparisons, metric, targets)


def resnet18_like(num_classes: int = 1000) -> Any:
    """ResNet-18's layout (BasicBlocks 2-2-2-2, 64..512 channels), random weights, eval mode."""
    import torch
    from torch import nn

    class Block(nn.Module):
        def __init__(self, cin: int, cout: int, stride: int) -> None:
            super().__init__()
            self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
            self.bn1 = nn.BatchNorm2d(cout)
            self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
            self.bn2 = nn.BatchNorm2d(cout)
            self.down = (
                nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))
                if stride != 1 or cin != cout
                else nn.Identity()
            )

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            y = torch.relu(self.bn1(self.conv1(x)))
            return torch.relu(self.bn2(self.conv2(y)) + self.down(x))

    layers: list[nn.Module] = [
        nn.Conv2d(3, 64, 7, 2, 3, bias=False),
        nn.BatchNorm2d(64),
        nn.ReLU(),
        nn.MaxPool2d(3, 2, 1),
    ]
    cin = 64
    for cout, stride in ((64, 1), (128, 2), (256, 2), (512, 2)):
        layers += [Block(cin, cout, stride), Block(cout, cout, 1)]
        cin = cout
    layers += [nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(512, num_classes)]
    torch.manual_seed(0)
    model = nn.Sequential(*layers)
    # Random but not trivial batch-norm statistics, so the folded convolutions are not plain copies.
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.uniform_(-0.1, 0.1)
                m.running_var.uniform_(0.5, 1.5)
                m.weight.uniform_(0.5, 1.5)
                m.bias.uniform_(-0.1, 0.1)
    return model.eval()


def resnet_case(work: Path, size: int, threads: int | None) -> dict[str, Any]:
    import torch

    rng = np.random.default_rng(0)
    images = rng.standard_normal((96, 3, size, size), dtype=np.float32)
    # The dynamo exporter names ONNX inputs after forward()'s parameters: nn.Sequential's is "input".
    arrays = {"input": images}
    result, seconds = run_optimize(
        f"resnet18-like {size}x{size}",
        model=resnet18_like(),
        example_inputs=(torch.from_numpy(images[:2]),),
        data=arrays,
        metric="top1",
        budget="20%",
        repo=work / "repo",
        name="resnet18like",
    )
    loaded = loaded_versions(result, threads)
    ev = held_out(arrays, None)
    comparisons = compare(loaded, {"input": images[ev][:BIG_BATCH]})
    ref, got = outputs_on(loaded, {"input": images[ev]}, loaded.output)
    metric = {
        "name": "top1 agreement (random weights, random images: speed only)",
        "examples": len(ev),
        "agreement": float(np.mean(ref.argmax(1) == got.argmax(1))),
        "mean_cosine_of_logits": float(cosine_per_example(ref, got).mean()),
    }
    targets = [
        target(f"resnet {size}: >= {RESNET_SPEEDUP}x ORT fp32 at batch 1", comparisons[1].speedup, RESNET_SPEEDUP),
        target(
            f"resnet {size}: >= {RESNET_SPEEDUP}x ORT fp32 throughput at batch {BIG_BATCH}",
            comparisons[BIG_BATCH].speedup,
            RESNET_SPEEDUP,
        ),
    ]
    return summary(f"resnet18-like {size}x{size}", result, seconds, loaded, comparisons, metric, targets)


# ---- output ----------------------------------------------------------------------------------


def print_case(case: dict[str, Any]) -> None:
    sbs = case["side_by_side"]
    print(
        f"\n{case['case']}: chosen {case['chosen']} ({', '.join(case['chosen_providers'])}), "
        f"{case['threads']} thread(s) for both; optimize took {case['optimize_seconds']:.1f} s"
    )
    print(f"  {'':26s} {'ORT fp32':>12s} {'chosen':>12s} {'ratio':>7s}  per-round ratio min/med/max")
    for b, label, key in (
        ("1", "p50 ms, batch 1", "p50_ms"),
        (str(BIG_BATCH), f"inf/s, batch {BIG_BATCH}", "throughput"),
    ):
        c = sbs[b]
        lo, mid, hi = c["speedup_rounds"]
        print(
            f"  {label:26s} {c['baseline'][key]:12.4g} {c['chosen'][key]:12.4g} {c['speedup']:6.2f}x"
            f"  {lo:.2f} / {mid:.2f} / {hi:.2f}"
        )
    rb1, rtp = case["report_speedup_b1"], case["report_throughput_ratio_best_batch"]
    print(
        f"  optimize's own report: {rb1:.2f}x at batch 1, {rtp:.2f}x throughput (each at its best batch)"
        if rb1 and rtp
        else "  optimize's own report: no figures"
    )
    w = case["would_choose"]
    print(f"  objective {case['objective']}; latency would choose {w['latency']}, throughput {w['throughput']}")
    m = case["metric"]
    print(
        "  metric: "
        + ", ".join(f"{k} {v:.4f}" if isinstance(v, float) else f"{k} {v}" for k, v in m.items() if k != "by_language")
    )
    for lang, figures in m.get("by_language", {}).items():
        print(f"    {lang}: mean {figures['mean']:.4f}, worst {figures['worst']:.4f} ({figures['examples']} sentences)")
    for t in case["targets"]:
        value = "n/a" if t["value"] is None else f"{t['value']:.3f}"
        print(f"  [{'PASS' if t['met'] else 'MISS'}] {t['target']}: {value}")


def print_variants(case: dict[str, Any]) -> None:
    print(f"\n  {case['case']}: every variant as optimize measured it")
    for r in case["variants"]:
        p50 = f"{r['p50_ms_b1']:.4f}" if r["p50_ms_b1"] is not None else "-"
        tp = f"{r['throughput']:.0f}@{r['throughput_batch']}" if r["throughput"] is not None else "-"
        score = f"{r['score']:.4f}" if r["score"] is not None else "-"
        print(
            f"    {r['variant']:34s} {r['status']:9s} p50 {p50:>9s} ms  {tp:>12s}/s  metric {score}  "
            f"threads {r['threads']}  {r['reason'][:70]}"
        )


def environment() -> dict[str, Any]:
    env = measured_environment()  # what every optimize report records, plus the date of the run
    return {
        "date": time.strftime("%Y-%m-%d %H:%M:%S %z"),
        "cpu": env.cpu_model,
        "cores": env.usable_cores,
        "python": env.python,
        "versions": env.libraries,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--skip-digits", action="store_true")
    parser.add_argument("--skip-minilm", action="store_true")
    parser.add_argument("--skip-resnet", action="store_true")
    parser.add_argument("--resnet-size", type=int, default=224, help="image side of the ResNet-like CNN")
    parser.add_argument("--threads", type=int, default=None, help="threads for both engines (default: the plan's)")
    parser.add_argument("--demo-repo", type=Path, default=None, help="demo repository (default: the cache)")
    parser.add_argument("--out", type=Path, default=HERE / "out" / "optimize.json")
    args = parser.parse_args()

    cases = []
    demo: Path | None = None
    if not (args.skip_digits and args.skip_minilm):
        from leanserve.demo import build_demo_repository

        demo = build_demo_repository(args.demo_repo, progress=lambda m: print(m, flush=True))
    with tempfile.TemporaryDirectory(prefix="leanserve-bench-optimize-") as tmp:
        work = Path(tmp)
        if demo is not None and not args.skip_digits:
            cases.append(digits_case(demo, work / "digits", args.threads))
        if demo is not None and not args.skip_minilm:
            cases.append(minilm_case(demo, work / "minilm", args.threads))
        if not args.skip_resnet:
            cases.append(resnet_case(work / "resnet", args.resnet_size, args.threads))
    env = environment()
    print(f"\n==== {env['cpu']}, {env['cores']} cores; " + ", ".join(f"{k} {v}" for k, v in env["versions"].items()))
    for case in cases:
        print_variants(case)
    for case in cases:
        print_case(case)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"environment": env, "cases": cases}, indent=1, default=str))
    print(f"\nwritten to {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
