"""One ``/metrics`` for several processes: their text expositions merged into one (pure functions).

Workers (``serve --workers N``) keep their counters in plain integers on their own event loop
(see :mod:`leanserve.stats`), so a request costs nothing extra for being one of several processes;
the price is paid at scrape time, here: the scraped worker gathers its siblings' expositions and
adds them up. Counters and histograms add. A gauge adds when it is an amount every process holds
its own share of (requests in flight, queue depth, memory), and otherwise follows the rule below:
``model_ready`` is the least (a model is ready when every worker, any of which may get the next
request, has it ready), a phase or a canary step the greatest, a start time the earliest.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import Final

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.registry import Collector

Combine = Callable[[float, float], float]

_LEAST: Final = frozenset({"leanserve_model_ready", "leanserve_model_resident", "process_start_time_seconds"})
_GREATEST: Final = frozenset(
    {
        "leanserve_model_load_seconds",
        "leanserve_experiment_canary_step",
        "leanserve_experiment_canary_percent",
        "leanserve_experiment_phase",
        "process_max_fds",
        "python_info",
    }
)
WORKERS_METRIC: Final = "leanserve_workers_scraped"


def combine_for(family: str, kind: str) -> Combine:
    """How two processes' values of one sample become one (policy, by family name and type)."""
    if kind == "gauge" and family in _LEAST:
        return min
    if kind == "gauge" and family in _GREATEST:
        return max
    return _add


def _add(a: float, b: float) -> float:
    return a + b


def merge_expositions(texts: Sequence[str]) -> list[Metric]:
    """The families of several text expositions, each sample combined across them.

    Families and samples keep the order they first appear in; a sample only some processes have
    (a model one worker loaded on demand) is the combination of those that have it.
    """
    merged: dict[str, Metric] = {}
    values: dict[str, dict[tuple[str, tuple[tuple[str, str], ...]], float]] = {}
    for text in texts:
        for family in text_string_to_metric_families(text):
            into = merged.get(family.name)
            if into is None:
                into = merged[family.name] = Metric(family.name, family.documentation, family.type, family.unit)
                values[family.name] = {}
            combine = combine_for(family.name, family.type)
            samples = values[family.name]
            for s in family.samples:
                key = (s.name, tuple(sorted(s.labels.items())))
                samples[key] = combine(samples[key], s.value) if key in samples else s.value
    for name, metric in merged.items():
        for (sample, labels), value in values[name].items():
            metric.add_sample(sample, dict(labels), value)
    return list(merged.values())


class _Families(Collector):
    def __init__(self, families: Iterable[Metric]) -> None:
        self._families = list(families)

    def collect(self) -> Iterator[Metric]:
        return iter(self._families)


def render_merged(texts: Sequence[str], workers: int) -> bytes:
    """The merged exposition, with ``leanserve_workers_scraped`` saying how many processes answered."""
    registry = CollectorRegistry(auto_describe=False)
    scraped = GaugeMetricFamily(WORKERS_METRIC, "Worker processes whose metrics this scrape adds up.", workers)
    registry.register(_Families([*merge_expositions(texts), scraped]))
    return generate_latest(registry)
