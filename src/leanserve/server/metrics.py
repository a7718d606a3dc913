"""The Prometheus exposition: every metric leanserve exports is declared here, once.

Values are read at scrape time from :class:`leanserve.stats.ModelStats` (kept cheaply on the hot
path) by a custom collector, so serving a request touches no prometheus-client lock.

Metric names (all labelled ``model``, ``version``):

- ``leanserve_requests_total{outcome,protocol}``: requests answered, by outcome (success, client_error,
  server_error) and by the protocol they came over (http, grpc; shadow: copies a shadow experiment sent)
- ``leanserve_responses_total{code}``: requests answered, by HTTP status code (200, 400, 404, 503, ...)
- ``leanserve_request_duration_seconds``: end-to-end time in the server, histogram
- ``leanserve_queue_duration_seconds``: time a request waited for its batch, histogram
- ``leanserve_compute_duration_seconds``: engine time per batch, histogram
- ``leanserve_batch_size``: rows per engine run, histogram
- ``leanserve_step_duration_seconds{step}``: time per batch of each step of a processed model
  (``preprocess``, ``engine``, ``postprocess``, pipeline steps), histogram
- ``leanserve_inferences_total``: rows inferred; ``leanserve_executions_total``: engine runs
- ``leanserve_in_flight_requests``: requests accepted and not yet answered, gauge
- ``leanserve_queue_depth``: requests waiting in the batcher, gauge
- ``leanserve_dropped_requests_total{reason}``: requests answered without reaching the engine:
  ``disconnected`` (the client hung up), ``deadline`` (504, it passed in the queue),
  ``expected_wait`` (503, the queue was longer than the deadline), ``overload`` (503, shed by the
  controlled delay)
- ``leanserve_model_ready``: 1 when the version answers, gauge
- ``leanserve_model_memory_bytes``: resident memory the version added at load and warm-up (its
  measured size, kept after an unload), gauge
- ``leanserve_model_resident``: 1 while the version's engine is in memory, gauge
- ``leanserve_model_load_seconds``: time to load and check the version, gauge
- ``leanserve_model_loads_total``, ``leanserve_model_load_failures_total``: loads, and loads that failed
- ``leanserve_model_unloads_total{reason}``: unloads by reason (evicted, operator, replaced, removed, shutdown)
- ``leanserve_model_memory_not_returned_bytes``: of the version's last unload, memory the process kept

Without the ``model``/``version`` labels:

- ``leanserve_memory_budget_bytes``: the budget (absent without one); ``leanserve_memory_used_bytes``:
  measured size of the resident versions; ``leanserve_memory_baseline_bytes``: the process's
  resident memory before any model loaded
- ``leanserve_evictions_total``: versions unloaded to make room
- ``leanserve_unrouted_requests_total{status}``: requests naming no model or version of the repository

Experiments (labelled ``experiment``, the alias; ``arm`` is ``model:version`` as configured):

- ``leanserve_experiment_requests_total{arm,outcome}``: requests answered through the alias, by the
  arm that answered and outcome (success, client_error, server_error)
- ``leanserve_experiment_shadow_copies_total{outcome}``: shadow copies the candidate answered, by outcome
- ``leanserve_experiment_shadow_shed_total``: shadow copies dropped because the candidate or the server was busy
- ``leanserve_experiment_canary_step``: the canary's current step (0 is the first), and
  ``leanserve_experiment_canary_percent``: the candidate's share of traffic there, in percent
- ``leanserve_experiment_phase{phase}``: 1 for the phase the experiment is in (running, promoted,
  rolled_back, stopped), 0 for the others

With ``serve --workers N``, ``/metrics`` adds every worker's exposition up (see
:mod:`.metrics_merge` for how each kind combines) and adds
``leanserve_workers_scraped``: the worker processes whose metrics that scrape includes.

Counts are this process's since it started; the experiment's status keeps the totals across restarts.

plus prometheus-client's standard ``process_*`` and ``python_*`` metrics.
"""

from __future__ import annotations

from collections.abc import Iterator

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.gc_collector import GCCollector
from prometheus_client.platform_collector import PlatformCollector
from prometheus_client.process_collector import ProcessCollector
from prometheus_client.registry import Collector

from ..experiments.alias import OUTCOMES
from ..experiments.records import PHASES
from ..registry import ModelRegistry
from ..router import Router
from ..stats import Histogram

LABELS = ["model", "version"]


class ModelCollector(Collector):
    def __init__(self, registry: ModelRegistry, router: Router) -> None:
        self._registry = registry
        self._router = router

    def collect(self) -> Iterator[Metric]:
        requests = CounterMetricFamily(
            "leanserve_requests",
            "Inference requests answered, by outcome and protocol.",
            labels=[*LABELS, "outcome", "protocol"],
        )
        responses = CounterMetricFamily(
            "leanserve_responses", "Inference requests answered, by HTTP status code.", labels=[*LABELS, "code"]
        )
        inferences = CounterMetricFamily("leanserve_inferences", "Rows (items) inferred.", labels=LABELS)
        executions = CounterMetricFamily("leanserve_executions", "Engine runs (batches).", labels=LABELS)
        histograms = {
            "request": HistogramMetricFamily(
                "leanserve_request_duration_seconds", "End-to-end request time in the server.", labels=LABELS
            ),
            "queue": HistogramMetricFamily(
                "leanserve_queue_duration_seconds", "Time a request waited for its batch.", labels=LABELS
            ),
            "compute": HistogramMetricFamily(
                "leanserve_compute_duration_seconds", "Engine time per batch.", labels=LABELS
            ),
            "batch": HistogramMetricFamily("leanserve_batch_size", "Rows per engine run.", labels=LABELS),
            "step": HistogramMetricFamily(
                "leanserve_step_duration_seconds",
                "Time per batch of each step of a processed model (handlers, engine, pipeline steps).",
                labels=[*LABELS, "step"],
            ),
        }
        in_flight = GaugeMetricFamily("leanserve_in_flight_requests", "Requests not yet answered.", labels=LABELS)
        queue_depth = GaugeMetricFamily("leanserve_queue_depth", "Requests waiting in the batcher.", labels=LABELS)
        dropped = CounterMetricFamily(
            "leanserve_dropped_requests",
            "Requests answered without reaching the engine, by reason.",
            labels=[*LABELS, "reason"],
        )
        ready = GaugeMetricFamily("leanserve_model_ready", "1 when the version answers requests.", labels=LABELS)
        memory = GaugeMetricFamily(
            "leanserve_model_memory_bytes", "Resident memory the version added at load.", labels=LABELS
        )
        load = GaugeMetricFamily("leanserve_model_load_seconds", "Time to load and check the version.", labels=LABELS)
        resident = GaugeMetricFamily(
            "leanserve_model_resident", "1 while the version's engine is in memory.", labels=LABELS
        )
        loads = CounterMetricFamily("leanserve_model_loads", "Loads of the version.", labels=LABELS)
        load_failures = CounterMetricFamily(
            "leanserve_model_load_failures", "Loads of the version that failed.", labels=LABELS
        )
        unloads = CounterMetricFamily(
            "leanserve_model_unloads", "Unloads of the version, by reason.", labels=[*LABELS, "reason"]
        )
        not_returned = GaugeMetricFamily(
            "leanserve_model_memory_not_returned_bytes",
            "Of the version's last unload, resident memory the process did not give back.",
            labels=LABELS,
        )

        for model in self._registry.snapshot():
            for mv in model.versions:
                s = mv.stats
                labels = [mv.name, str(mv.version)]
                for (protocol, outcome), count in s.outcomes_by_protocol().items():
                    requests.add_metric([*labels, outcome, protocol], count)
                for code, count in sorted(s.responses_by_code().items()):
                    responses.add_metric([*labels, str(code)], count)
                inferences.add_metric(labels, s.inference_count)
                executions.add_metric(labels, s.execution_count)
                _add_histogram(histograms["request"], labels, s.request_seconds)
                _add_histogram(histograms["queue"], labels, s.queue_seconds)
                _add_histogram(histograms["compute"], labels, s.compute_seconds)
                _add_histogram(histograms["batch"], labels, s.batch_size)
                for step, step_stats in s.steps.items():
                    _add_histogram(histograms["step"], [*labels, step], step_stats.seconds)
                in_flight.add_metric(labels, s.in_flight)
                queue_depth.add_metric(labels, mv.queued)
                for reason, count in s.dropped.items():
                    dropped.add_metric([*labels, reason], count)
                ready.add_metric(labels, 1.0 if mv.ready else 0.0)
                memory.add_metric(labels, mv.memory_bytes)
                resident.add_metric(labels, 1.0 if mv.resident else 0.0)
                load.add_metric(labels, s.load_seconds)
                loads.add_metric(labels, s.loads)
                load_failures.add_metric(labels, s.load_failures)
                for reason, count in s.unloads.items():
                    unloads.add_metric([*labels, reason], count)
                not_returned.add_metric(labels, s.memory_not_returned_bytes)
        yield requests
        yield responses
        yield inferences
        yield executions
        yield from histograms.values()
        yield from (
            in_flight,
            queue_depth,
            dropped,
            ready,
            memory,
            resident,
            load,
            loads,
            load_failures,
            unloads,
            not_returned,
        )
        yield from self._server_metrics()

    def _server_metrics(self) -> Iterator[Metric]:
        registry = self._registry
        if registry.options.memory_budget is not None:
            yield GaugeMetricFamily(
                "leanserve_memory_budget_bytes", "Memory budget for resident models.", registry.options.memory_budget
            )
        yield GaugeMetricFamily(
            "leanserve_memory_used_bytes", "Measured size of the resident model versions.", registry.used_bytes()
        )
        yield GaugeMetricFamily(
            "leanserve_memory_baseline_bytes",
            "The process's resident memory before any model loaded.",
            registry.baseline_bytes,
        )
        yield CounterMetricFamily(
            "leanserve_evictions", "Model versions unloaded to make room in the budget.", registry.evictions
        )
        unrouted = CounterMetricFamily(
            "leanserve_unrouted_requests",
            "Requests that named no model or version of the repository, by status.",
            labels=["status"],
        )
        for status, count in sorted(self._router.unrouted.items()):
            unrouted.add_metric([str(status)], count)
        yield unrouted
        yield from self._experiment_metrics()

    def _experiment_metrics(self) -> Iterator[Metric]:
        label = ["experiment"]
        requests = CounterMetricFamily(
            "leanserve_experiment_requests",
            "Requests answered through an experiment alias, by arm and outcome.",
            labels=[*label, "arm", "outcome"],
        )
        copies = CounterMetricFamily(
            "leanserve_experiment_shadow_copies",
            "Shadow copies the candidate answered, by outcome.",
            labels=[*label, "outcome"],
        )
        shed = CounterMetricFamily(
            "leanserve_experiment_shadow_shed",
            "Shadow copies dropped because the candidate or the server was busy.",
            labels=label,
        )
        step = GaugeMetricFamily("leanserve_experiment_canary_step", "The canary's current step, from 0.", labels=label)
        percent = GaugeMetricFamily(
            "leanserve_experiment_canary_percent", "The canary candidate's share of traffic, in percent.", labels=label
        )
        phase = GaugeMetricFamily(
            "leanserve_experiment_phase", "1 for the phase the experiment is in.", labels=[*label, "phase"]
        )
        for alias in list(self._router.aliases.values()):
            name = [alias.name]
            exp = alias.experiment
            for i, arm in enumerate(alias.arms):
                for outcome in OUTCOMES:
                    requests.add_metric([*name, arm.label, outcome], alias.requests(i, outcome))
            if alias.shadow:
                for outcome in OUTCOMES:
                    copies.add_metric([*name, outcome], alias.copies.get(outcome, 0))
                shed.add_metric(name, exp.shed)
            state = exp.state
            if exp.config.mode == "canary":
                step.add_metric(name, state.step)
                percent.add_metric(name, exp.config.steps[state.step])
            for p in PHASES:
                phase.add_metric([*name, p], 1.0 if state.phase == p else 0.0)
        yield from (requests, copies, shed, step, percent, phase)


def _add_histogram(family: HistogramMetricFamily, labels: list[str], h: Histogram) -> None:
    family.add_metric(labels, h.cumulative(), sum_value=h.sum)


def metrics_registry(registry: ModelRegistry, router: Router) -> CollectorRegistry:
    reg = CollectorRegistry(auto_describe=False)
    reg.register(ModelCollector(registry, router))
    ProcessCollector(registry=reg)
    PlatformCollector(registry=reg)
    GCCollector(registry=reg)
    return reg


def render_metrics(registry: CollectorRegistry) -> tuple[bytes, bytes]:
    """(body, content type) of the text exposition."""
    return generate_latest(registry), CONTENT_TYPE_LATEST.encode()
