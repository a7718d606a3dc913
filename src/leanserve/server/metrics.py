"""The Prometheus exposition: every metric leanserve exports is declared here, once.

Values are read at scrape time from :class:`leanserve.stats.ModelStats` (kept cheaply on the hot
path) by a custom collector, so serving a request touches no prometheus-client lock.

Metric names (all labelled ``model``, ``version``):

- ``leanserve_requests_total{outcome}``: requests answered, by outcome (success, client_error, server_error)
- ``leanserve_request_duration_seconds``: end-to-end time in the server, histogram
- ``leanserve_queue_duration_seconds``: time a request waited for its batch, histogram
- ``leanserve_compute_duration_seconds``: engine time per batch, histogram
- ``leanserve_batch_size``: rows per engine run, histogram
- ``leanserve_inferences_total``: rows inferred; ``leanserve_executions_total``: engine runs
- ``leanserve_in_flight_requests``: requests accepted and not yet answered, gauge
- ``leanserve_queue_depth``: requests waiting in the batcher, gauge
- ``leanserve_model_ready``: 1 when the version answers, gauge
- ``leanserve_model_memory_bytes``: resident memory the version added at load, gauge
- ``leanserve_model_load_seconds``: time to load and check the version, gauge

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

from ..registry import ModelRegistry
from ..stats import Histogram

LABELS = ["model", "version"]


class ModelCollector(Collector):
    def __init__(self, registry: ModelRegistry) -> None:
        self._registry = registry

    def collect(self) -> Iterator[Metric]:
        requests = CounterMetricFamily(
            "leanserve_requests", "Inference requests answered, by outcome.", labels=[*LABELS, "outcome"]
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
        }
        in_flight = GaugeMetricFamily("leanserve_in_flight_requests", "Requests not yet answered.", labels=LABELS)
        queue_depth = GaugeMetricFamily("leanserve_queue_depth", "Requests waiting in the batcher.", labels=LABELS)
        ready = GaugeMetricFamily("leanserve_model_ready", "1 when the version answers requests.", labels=LABELS)
        memory = GaugeMetricFamily(
            "leanserve_model_memory_bytes", "Resident memory the version added at load.", labels=LABELS
        )
        load = GaugeMetricFamily("leanserve_model_load_seconds", "Time to load and check the version.", labels=LABELS)

        for model in self._registry.models.values():
            for mv in model.versions.values():
                s = mv.stats
                labels = [mv.name, str(mv.version)]
                for outcome, count in s.outcomes.items():
                    requests.add_metric([*labels, outcome], count)
                inferences.add_metric(labels, s.inference_count)
                executions.add_metric(labels, s.execution_count)
                _add_histogram(histograms["request"], labels, s.request_seconds)
                _add_histogram(histograms["queue"], labels, s.queue_seconds)
                _add_histogram(histograms["compute"], labels, s.compute_seconds)
                _add_histogram(histograms["batch"], labels, s.batch_size)
                in_flight.add_metric(labels, s.in_flight)
                queue_depth.add_metric(labels, mv.batcher.queued if mv.batcher else 0)
                ready.add_metric(labels, 1.0 if mv.ready else 0.0)
                memory.add_metric(labels, s.memory_bytes)
                load.add_metric(labels, s.load_seconds)
        yield requests
        yield inferences
        yield executions
        yield from histograms.values()
        yield from (in_flight, queue_depth, ready, memory, load)


def _add_histogram(family: HistogramMetricFamily, labels: list[str], h: Histogram) -> None:
    family.add_metric(labels, h.cumulative(), sum_value=h.sum)


def metrics_registry(registry: ModelRegistry) -> CollectorRegistry:
    reg = CollectorRegistry(auto_describe=False)
    reg.register(ModelCollector(registry))
    ProcessCollector(registry=reg)
    PlatformCollector(registry=reg)
    GCCollector(registry=reg)
    return reg


def render_metrics(registry: CollectorRegistry) -> tuple[bytes, bytes]:
    """(body, content type) of the text exposition."""
    return generate_latest(registry), CONTENT_TYPE_LATEST.encode()
