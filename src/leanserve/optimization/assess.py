"""Judge a model file against the budget on the held-out split, and measure how it runs."""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from ..config import RuntimeOptions
from ..processing.offline import EndToEnd, Tensors
from ..runtimes import Runtime, load_runtime
from ..timing import Settings, time_for, time_runs
from .budget import Budget, Verdict
from .data import Dataset
from .measure import energy_per_inference, file_size, peak_memory
from .metrics import Metric, Score, score_groups
from .results import Measurements
from .sweep import Objective, ServingPlan, SweepPoint, recommend, sweep, tile


@dataclass(frozen=True, slots=True)
class Bench:
    """What every variant is judged and timed against."""

    evaluation: Dataset
    reference: Mapping[str, np.ndarray]  # the original's outputs on the evaluation split
    labels: np.ndarray | None
    metric: Metric
    budget: Budget
    original_score: Score
    eval_batch: int
    dynamic_batch: bool
    settings: Settings
    threads: tuple[int, ...]
    batch_sizes: tuple[int, ...]
    timing_inputs: Mapping[str, np.ndarray]  # a slice of the evaluation inputs, tiled into batches
    objective: Objective  # which threads the serving plan picks
    # With --requests: the model's handlers, and requests as clients send them, so latency and
    # throughput are timed end to end (preprocess, engine, postprocess) rather than the engine alone.
    end_to_end: EndToEnd | None = None
    requests: tuple[Tensors, ...] = ()


def predict(runtime: Runtime, data: Dataset, batch_size: int) -> dict[str, np.ndarray]:
    parts: dict[str, list[np.ndarray]] = {}
    for batch in data.batches(batch_size):
        for name, value in runtime.run(batch).items():
            parts.setdefault(name, []).append(np.asarray(value))
    return {name: np.concatenate(values) for name, values in parts.items()}


def judge(bench: Bench, path: Path, platform: str, options: RuntimeOptions) -> tuple[Score, Verdict]:
    runtime = load_runtime(path, platform, options)
    try:
        outputs = predict(runtime, bench.evaluation, bench.eval_batch)
    finally:
        runtime.close()
    score = score_groups(bench.metric, bench.reference, outputs, bench.labels, bench.evaluation.groups)
    return score, bench.budget.check(score, bench.original_score)


def quick_p50(bench: Bench, path: Path, platform: str, options: RuntimeOptions) -> float:
    """Batch-1 median with the quick settings: enough to tell faster from slower."""
    runtime = load_runtime(path, platform, replace(options, intra_op_threads=max(bench.threads)))
    try:
        feed = tile(bench.timing_inputs, 1)
        return time_runs(lambda: runtime.run(feed), 1, Settings.quick()).p50_ms
    finally:
        runtime.close()


def measure(
    bench: Bench,
    path: Path,
    files: tuple[Path, ...],
    platform: str,
    options: RuntimeOptions,
    conversion_s: float,
    with_sweep: bool,
) -> tuple[Measurements, ServingPlan | None, tuple[SweepPoint, ...]]:
    """Sweep threads x batch sizes (for servable variants), then measure with the plan's threads."""
    plan: ServingPlan | None = None
    points: tuple[SweepPoint, ...] = ()
    if with_sweep:
        points = tuple(
            sweep(
                lambda t: load_runtime(path, platform, replace(options, intra_op_threads=t)),
                bench.timing_inputs,
                bench.threads,
                bench.batch_sizes,
                bench.settings,
            )
        )
        plan = recommend(points, bench.dynamic_batch, bench.objective)
    threads = plan.threads if plan else max(bench.threads)
    batch = plan.best_batch_size if plan else 1
    big = tile(bench.timing_inputs, batch)

    served = replace(options, intra_op_threads=threads)
    t0 = time.perf_counter()
    runtime = load_runtime(path, platform, served)
    load_s = time.perf_counter() - t0
    try:
        one = tile(bench.timing_inputs, 1)
        e2e = bench.end_to_end
        if e2e is not None and bench.requests:
            latency = time_runs(e2e.runner(runtime, bench.requests[:1]), 1, bench.settings)
            several = [bench.requests[i % len(bench.requests)] for i in range(batch)]
            ms = time_for(e2e.runner(runtime, several), bench.settings.sweep_seconds * 2)
        else:
            latency = time_runs(lambda: runtime.run(one), 1, bench.settings)
            ms = time_for(lambda: runtime.run(big), bench.settings.sweep_seconds * 2)
        energy = energy_per_inference(lambda: runtime.run(big), batch, bench.settings.sweep_seconds * 4)
        providers = runtime.providers
    finally:
        runtime.close()
    peak = peak_memory(path, platform, served, big)
    return (
        Measurements(
            latency=latency,
            throughput=batch * 1000.0 / ms,
            throughput_batch=batch,
            peak_memory_mb=peak,
            file_size_bytes=file_size(files),
            load_time_s=load_s,
            conversion_time_s=conversion_s,
            energy=energy,
            providers=providers,
            end_to_end=e2e is not None and bool(bench.requests),
        ),
        plan,
        points,
    )
