"""``optimize``: build variants, judge them on held-out data, measure them, serve the best.

The steps, in order: read the source and the data; split it (calibration / evaluation); run
the original for the reference outputs; build, judge and measure every variant; for a family
of int8 variants that all miss the budget, search which nodes to keep in float; choose the
fastest variant inside the budget; write it (with the original and the other variants worth
keeping) into the repository; write report.json and report.html beside the model.
"""

from __future__ import annotations

import datetime
import tempfile
from collections.abc import Callable, Mapping, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np

from .. import __version__
from ..config import DynamicBatching, RuntimeOptions
from ..errors import UsageError
from ..runtimes import load_runtime
from ..runtimes.threads import available_cores
from ..timing import Settings, environment
from . import fallback as fb
from . import sources
from .assess import Bench, judge, measure, predict, quick_p50
from .budget import parse_budget
from .data import conform, from_arrays, load_data, split
from .metrics import make_metric, score_groups
from .report import write_html, write_json
from .results import OptimizeResult, SourceInfo, SplitInfo, VariantResult
from .selection import choose, fallback_order, keep
from .sweep import DEFAULT_OBJECTIVE, OBJECTIVES, Objective, batch_candidates, thread_candidates
from .variants import CATALOG, Builder, BuiltVariant, VariantSpec, select, unavailable
from .writer import VersionEntry, write_versions

Progress = Callable[[str], None]
_FALLBACK_FAMILIES = ("int8-static", "int8-dynamic")


def optimize(
    model: Any,
    *,
    data: Path | str | Mapping[str, np.ndarray],
    repo: Path | str,
    name: str | None = None,
    metric: str = "auto",
    budget: str | float | None = None,
    worst: str | float | None = None,
    labels: str | None = None,
    groups: str | None = None,
    example_inputs: tuple[Any, ...] | None = None,
    output: str | None = None,
    variants: Sequence[str] | None = None,
    quick: bool = False,
    objective: str = DEFAULT_OBJECTIVE,
    calibration_fraction: float = 0.25,
    seed: int = 0,
    fallback: bool = True,
    requests: Path | str | Mapping[str, np.ndarray] | None = None,
    progress: Progress | None = None,
) -> OptimizeResult:
    """Optimize ``model`` (an .onnx / .pt2 path, or a torch.nn.Module with ``example_inputs``).

    ``data`` is an .npz file, a folder of them, or a mapping of arrays (one per model input, plus
    ``labels`` and ``groups`` if named; ``groups`` holds a group name per example, and every
    figure of the metric is also reported per group). See :mod:`leanserve.optimization.budget` for how ``budget`` reads.

    ``requests`` (an .npz with one array per input clients send, or a folder of files, one request
    each) times every variant end to end through the handler of ``<repo>/<name>`` (its
    ``handler.py`` and model.toml's ``[handler]``), so the latency reported is what clients see.
    """
    say = progress or (lambda _msg: None)
    if objective not in OBJECTIVES:
        raise UsageError(f"unknown objective {objective!r}", hint=f"use one of {', '.join(OBJECTIVES)}")
    specs = select(variants, quick)
    # Fail fast on a bad metric or budget, before the slow steps (export, data, the original).
    parse_budget(budget, make_metric("accuracy" if metric == "auto" else metric, "", True), worst)
    repo = Path(repo)
    if repo.exists() and not repo.is_dir():
        raise UsageError(f"repository {repo} is not a folder")
    with tempfile.TemporaryDirectory(prefix="leanserve-optimize-") as tmp:
        work = Path(tmp)
        say("reading the model")
        source = sources.prepare(model, work, example_inputs)
        name = name or _default_name(model)
        run = _Run(source, work, say)
        return run.execute(
            data=data,
            repo=repo,
            name=name,
            metric=metric,
            budget=budget,
            worst=worst,
            labels=labels,
            groups=groups,
            output=output,
            specs=specs,
            quick=quick,
            objective=objective,
            calibration_fraction=calibration_fraction,
            seed=seed,
            fallback=fallback,
            requests=requests,
        )


def _end_to_end(model_dir: Path, requests: Path | str | Mapping[str, np.ndarray]) -> dict[str, Any]:
    """The Bench fields that time a model through its handlers (optimize's ``requests``)."""
    from ..config import load_model_config
    from ..processing.offline import EndToEnd, read_requests

    config = load_model_config(model_dir)
    e2e = EndToEnd.of(model_dir, config)
    if e2e.handler is None:
        raise UsageError(f"{model_dir} has no handler to time end to end", hint="drop --requests, or add handler.py")
    source = Path(requests) if isinstance(requests, (str, Path)) else requests
    read = read_requests(source, [s.name for s in config.public_inputs])
    return {"end_to_end": e2e, "requests": tuple(read[:64])}


def _default_name(model: Any) -> str:
    if isinstance(model, (str, Path)):
        return Path(model).stem
    return type(model).__name__.lower()


class _Run:
    """One optimize run: holds what the steps share so each step stays a short method."""

    def __init__(self, source: sources.Source, work: Path, say: Progress) -> None:
        self.source = source
        self.work = work
        self.say = say
        self.built: dict[str, BuiltVariant] = {}
        self.results: dict[str, VariantResult] = {}

    def execute(
        self,
        *,
        data: Path | str | Mapping[str, np.ndarray],
        repo: Path,
        name: str,
        metric: str,
        budget: str | float | None,
        worst: str | float | None,
        labels: str | None,
        groups: str | None,
        output: str | None,
        specs: list[VariantSpec],
        quick: bool,
        objective: Objective,
        calibration_fraction: float,
        seed: int,
        fallback: bool,
        requests: Path | str | Mapping[str, np.ndarray] | None = None,
    ) -> OptimizeResult:
        original_rt = load_runtime(self.source.onnx_path, "onnxruntime", RuntimeOptions())
        inputs, outputs = original_rt.inputs, original_rt.outputs
        dynamic = all(t.shape and t.shape[0] == -1 for t in inputs)
        raw = (
            load_data(Path(data), labels, groups)
            if isinstance(data, (str, Path))
            else from_arrays(data, labels, groups=groups)
        )
        dataset = conform(raw, inputs)
        parts = split(dataset, calibration_fraction, seed=seed)
        out_names = [t.name for t in outputs]
        if output is not None and output not in out_names:
            raise UsageError(f"the model has no output {output!r}", hint=f"outputs: {', '.join(out_names)}")
        metric_obj = make_metric(metric, output or out_names[0], dataset.labels is not None)
        budget_obj = parse_budget(budget, metric_obj, worst)
        eval_batch = 32 if dynamic else 1
        self.say(f"running the original on {len(parts.evaluation)} held-out examples")
        try:
            reference = predict(original_rt, parts.evaluation, eval_batch)
        finally:
            original_rt.close()
        settings = Settings.quick() if quick else Settings()
        self.bench = Bench(
            evaluation=parts.evaluation,
            reference=reference,
            labels=parts.evaluation.labels,
            metric=metric_obj,
            budget=budget_obj,
            original_score=score_groups(
                metric_obj, reference, reference, parts.evaluation.labels, parts.evaluation.groups
            ),
            eval_batch=eval_batch,
            dynamic_batch=dynamic,
            settings=settings,
            threads=tuple(thread_candidates(available_cores())),
            batch_sizes=tuple(batch_candidates(dynamic, quick)),
            timing_inputs={k: v[:64] for k, v in parts.evaluation.inputs.items()},
            objective=objective,
        )
        if requests is not None:
            self.bench = replace(self.bench, **_end_to_end(repo / name, requests))
            self.say(f"timing end to end through {name}'s handler on {len(self.bench.requests)} requests")
        self.builder = Builder(self.source.onnx_path, self.work, parts.calibration, dynamic)
        self.calibration = parts.calibration

        self.say("measuring the original")
        original = self._original()
        for spec in [s for s in specs if s.name != "ov-int8"]:
            self._variant(spec)
        ov_int8 = next((s for s in specs if s.name == "ov-int8"), None)
        if ov_int8:
            self._ov_int8(ov_int8)
        if fallback:
            limit = self.bench.budget.limit(self.bench.original_score)
            higher = self.bench.metric.higher_is_better
            results = list(self.results.values())
            for family in fallback_order(results, _FALLBACK_FAMILIES, limit, higher, objective, _family):
                if self._fallback(family, original):
                    if family == "int8-static" and ov_int8:
                        self._ov_int8(ov_int8)  # OpenVINO runs the model that fits
                    break  # one variant inside the budget is what the search is for
        for v in list(self.results.values()):
            if v.measurements and original.measurements:
                self.results[v.name] = replace(
                    v, speedup=original.measurements.latency.p50_ms / v.measurements.latency.p50_ms
                )

        variants = list(self.results.values())
        chosen = choose(original, variants, objective)
        kept = keep(chosen, variants, metric_obj.higher_is_better) if chosen is not original else []
        self.say(f"writing {len(kept) + 1} version(s) into {repo / name}")
        numbers = self._write(repo, name, original, kept, chosen)
        original = replace(original, version=numbers["original"], note="the source model")
        variants = [self._annotate(v, numbers, chosen) for v in variants]
        result = OptimizeResult(
            model=name,
            repository=repo,
            source=SourceInfo(self.source.kind, self.source.origin, self.source.sha256, self.source.notes),
            metric=metric_obj.name,
            budget=budget_obj.describe(),
            split=SplitInfo(len(parts.calibration), len(parts.evaluation), seed, dataset.source),
            original=original,
            variants=tuple(variants),
            chosen=chosen.name,
            default_version=numbers[chosen.name],
            served_original=chosen.name == "original",
            message=_message(chosen, variants, original, objective),
            environment=environment(),
            objective=objective,
            higher_is_better=metric_obj.higher_is_better,
            report_json=repo / name / "report.json",
            report_html=repo / name / "report.html",
        )
        write_json(result, repo / name / "report.json")
        write_html(result, repo / name / "report.html")
        return result

    # ---- steps ----------------------------------------------------------------------------

    def _original(self) -> VariantResult:
        path = self.source.original_file
        m, plan, points = measure(self.bench, path, (path,), "onnxruntime", RuntimeOptions(), 0.0, True)
        return VariantResult(
            name="original",
            method="original",
            platform="onnxruntime",
            status="accepted",
            reason="the reference every variant is judged against",
            score=self.bench.original_score,
            measurements=m,
            plan=plan,
            sweep=points,
            speedup=1.0,
        )

    def _variant(self, spec: VariantSpec, *, qdq_model: Path | None = None) -> None:
        why = unavailable(spec)
        if why:
            self.results[spec.name] = VariantResult(spec.name, spec.method, spec.platform, "skipped", why)
            return
        self.say(f"building {spec.name}")
        try:
            built = self.builder.build(spec, qdq_model=qdq_model)
        except Exception as e:  # a quantizer or converter failing is a result, not a crash
            self.results[spec.name] = VariantResult(
                spec.name, spec.method, spec.platform, "failed", f"build failed: {type(e).__name__}: {e}"
            )
            return
        self._assess(built)

    def _assess(self, built: BuiltVariant, fallback_report: fb.FallbackReport | None = None) -> VariantResult:
        spec = built.spec
        self.say(f"judging and measuring {built.name}")
        try:
            score, verdict = judge(self.bench, built.model_file, spec.platform, built.runtime)
            m, plan, points = measure(
                self.bench,
                built.model_file,
                built.files,
                spec.platform,
                built.runtime,
                built.conversion_s,
                verdict.accepted,
            )
        except UsageError:
            raise
        except Exception as e:
            result = VariantResult(
                built.name,
                spec.method,
                spec.platform,
                "failed",
                f"could not run: {type(e).__name__}: {e}",
                settings=built.settings,
            )
            self.results[built.name] = result
            return result
        self.built[built.name] = built
        result = VariantResult(
            name=built.name,
            method=spec.method,
            platform=spec.platform,
            status="accepted" if verdict.accepted else "rejected",
            reason=verdict.reason if verdict.accepted else f"rejected, never served: {verdict.reason}",
            score=score,
            measurements=m,
            plan=plan,
            sweep=points,
            settings=built.settings,
            fallback=fallback_report,
        )
        self.results[built.name] = result
        return result

    def _fallback(self, family: str, original: VariantResult) -> bool:
        """Search ``family``'s worst member for nodes to keep in float; whether a variant now fits."""
        if original.measurements is None:
            return False
        # The members its quantizer made, which it can make again with nodes left out (ov-int8 is
        # of the family but converted from one of them).
        members = [v for v in self.results.values() if v.method == family and v.score is not None]
        sign = 1.0 if self.bench.metric.higher_is_better else -1.0
        # The member closest to the budget: the fewest nodes in float should make it fit.
        worst_off = max(members, key=lambda v: sign * v.score.value if v.score else float("-inf"))
        built = self.built[worst_off.name]
        self.say(f"{worst_off.name} misses the budget: ranking its quantized nodes")
        prepared, _ = self.builder.prepared()
        try:
            ranking = fb.rank_nodes(prepared, built.model_file, self.calibration, self.bench.eval_batch)
        except Exception as e:
            self.results[worst_off.name] = replace(worst_off, note=f"fallback ranking failed: {e}")
            return False
        baseline = original.measurements.latency.p50_ms
        fallback_name = f"{built.spec.name}-fallback"

        def attempt(exclude: Sequence[str]) -> fb.Attempt:
            self.say(f"fallback: {len(exclude)} node(s) of {built.spec.name} in float")
            b = self.builder.build(built.spec, nodes_to_exclude=exclude, name=fallback_name)
            score, verdict = judge(self.bench, b.model_file, b.spec.platform, b.runtime)
            p50 = quick_p50(self.bench, b.model_file, b.spec.platform, b.runtime)
            return fb.Attempt(b, score.value, verdict.accepted, p50)

        report, found = fb.search(worst_off.name, ranking, attempt, baseline)
        self.results[worst_off.name] = replace(worst_off, fallback=report)
        return found is not None and self._assess(found.built, report).status == "accepted"

    def _ov_int8(self, spec: VariantSpec) -> None:
        statics = [
            v
            for v in self.results.values()
            if v.method == "int8-static" and v.score is not None and v.name in self.built
        ]
        if not statics:
            self.results[spec.name] = VariantResult(
                spec.name, spec.method, spec.platform, "skipped", "needs an int8 static QDQ variant to convert"
            )
            return
        sign = 1.0 if self.bench.metric.higher_is_better else -1.0
        best = max(statics, key=lambda v: (v.status == "accepted", sign * v.score.value if v.score else 0.0))
        self._variant(spec, qdq_model=self.built[best.name].model_file)

    def _write(
        self, repo: Path, name: str, original: VariantResult, kept: list[VariantResult], chosen: VariantResult
    ) -> dict[str, int]:
        # The original keeps its bytes but takes the conventional file name.
        (self.work / "original").mkdir(exist_ok=True)
        original_file = self.work / "original" / "model.onnx"
        sources.copy_original(self.source, original_file)
        entries = [self._entry(original, original_file, (original_file,), RuntimeOptions(), {"method": "original"})]
        for v in kept:
            b = self.built[v.name]
            entries.append(self._entry(v, b.model_file, b.files, b.runtime, b.settings))
        return write_versions(repo, name, entries, chosen.name)

    def _entry(
        self,
        v: VariantResult,
        model_file: Path,
        files: tuple[Path, ...],
        runtime: RuntimeOptions,
        settings: dict[str, Any],
    ) -> VersionEntry:
        plan, score, bench = v.plan, v.score, self.bench
        provenance: dict[str, Any] = {
            "method": v.method,
            "variant": v.name,
            "source": self.source.origin,
            "source_kind": self.source.kind,
            "source_sha256": self.source.sha256,
            "settings": {k: val for k, val in settings.items() if k != "method"},
            "metric": bench.metric.name,
            "metric_value": score.value if score else None,
            "metric_worst": score.worst if score else None,
            "original_metric_value": bench.original_score.value,
            "budget": bench.budget.text,
            "evaluation_examples": len(bench.evaluation),
            "calibration_examples": len(self.calibration),
            "p50_ms_batch1": v.measurements.latency.p50_ms if v.measurements else None,
            "created": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
            "leanserve": __version__,
        }
        if v.fallback is not None:
            provenance["kept_in_float"] = [n.name for n in v.fallback.kept_in_float]
        return VersionEntry(
            label=v.name,
            files=files if files[0] == model_file else (model_file, *files),
            platform=v.platform,
            runtime=replace(runtime, intra_op_threads=plan.threads) if plan else runtime,
            batch_size=plan.max_batch_size if plan else None,
            dynamic_batching=DynamicBatching(max_queue_delay_ms=plan.max_queue_delay_ms)
            if plan and plan.max_batch_size > 1
            else None,
            provenance=provenance,
        )

    def _annotate(self, v: VariantResult, numbers: dict[str, int], chosen: VariantResult) -> VariantResult:
        if v.name in numbers:
            note = "served by default" if v.name == chosen.name else "kept as an alternative version"
            return replace(v, version=numbers[v.name], note=note)
        if v.status == "accepted":
            return replace(v, note="inside the budget but another variant is better on every axis")
        return v


def _family(v: VariantResult) -> str:
    """A variant's fallback family: its catalog entry's, or its method for a fallback's own result."""
    return CATALOG[v.name].family if v.name in CATALOG else v.method


def _message(
    chosen: VariantResult, variants: Sequence[VariantResult], original: VariantResult, objective: Objective
) -> str:
    if chosen.name == "original":
        if not any(v.status == "accepted" for v in variants):
            return "No variant stayed inside the budget; the original model is served."
        return "No variant inside the budget was faster than the original; the original model is served."
    score = f"{chosen.score.value:.4f}" if chosen.score else "?"
    ref = f"{original.score.value:.4f}" if original.score else "?"
    # Speak of what the choice was made on: batch-1 latency, or throughput at each one's best batch.
    if objective == "throughput" and chosen.measurements and original.measurements:
        ratio = chosen.measurements.throughput / original.measurements.throughput
        gain = f"{ratio:.2f}x the original's throughput"
    else:
        gain = f"{chosen.speedup:.2f}x the original's speed at batch 1" if chosen.speedup else "? the original's speed"
    return f"{chosen.name} is served: {gain}, metric {score} (original {ref})."
