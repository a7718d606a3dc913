"""``leanserve.loadgen.run``: prepare the requests, drive each load level in windows, summarize.

Mechanism around the policies of ``schedule``, ``windows`` and ``slo``; the HTTP work is
``client.Driver``'s. Everything runs on one uvloop event loop in the calling thread (``leanserve
bench`` is its own process, so the load generator never shares a core's interpreter with the
server it measures).

``Workload``, ``measure_level`` and ``search_slo`` are also driven directly by benchmarks (the peers'
comparison builds a ``Workload`` of its own request bytes for servers with their own paths).
"""

from __future__ import annotations

import asyncio
import gc
import math
import urllib.parse
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from ..errors import ClientError, UsageError
from ..timing import CpuMeter, environment, load_average, now
from .client import Driver, Recorded
from .histogram import Histogram
from .inputs import Target, TensorSpec, encode_request, fetch_inputs, samples_for, specs_of_file
from .results import Report, Result, SloSearch
from .schedule import DRAWN, Arrivals, Level, choices, parse_mix
from .slo import Trial, best, next_rate
from .windows import Plan, Window, mean_interval, measure_another, stable

SATURATED = 0.9  # of one core: the client is then measuring itself as much as the server
QUANTILES = (0.5, 0.9, 0.99, 0.999, 1.0)

Progress = Callable[[str], None]


@dataclass(frozen=True, slots=True)
class Workload:
    """Every request of a run, encoded once, and the order they are sent in."""

    host: str
    port: int
    models: tuple[str, ...]
    requests: tuple[bytes, ...]
    model_of: tuple[int, ...]  # request index -> model index
    sequence: np.ndarray  # request indices, DRAWN of them, cycled
    seed: int = 0  # of the open loop's arrivals (the inputs and the mix are drawn already)


def parse_url(url: str) -> tuple[str, str, int]:
    """(base URL, host, port) of ``http://host:port``."""
    if "://" not in url:
        url = "http://" + url
    parts = urllib.parse.urlsplit(url)
    if parts.scheme != "http":
        raise UsageError(f"{url}: only http:// is supported", hint="leanserve bench speaks plain HTTP/1.1")
    if not parts.hostname:
        raise UsageError(f"{url} names no host")
    port = parts.port or 80
    return f"http://{parts.netloc}", parts.hostname, port


def prepare(
    url: str,
    models: Sequence[str],
    version: str | None = None,
    binary: bool = False,
    data: str | Path | None = None,
    mix: str | None = None,
    headers: Mapping[str, str] | None = None,
    seed: int = 0,
    inputs: Sequence[TensorSpec] | None = None,
) -> Workload:
    """Read each model's inputs from the server (or take ``inputs``, for every model) and encode its requests."""
    base, host, port = parse_url(url)
    headers = dict(headers or {})
    requests: list[bytes] = []
    model_of: list[int] = []
    first_of: list[int] = []
    for m, name in enumerate(models):
        target = Target(name, version)
        specs = list(inputs) if inputs is not None else _declared(base, target, headers, data)
        first_of.append(len(requests))
        for sample in samples_for(data, name, specs, seed=seed + m):
            requests.append(encode_request(f"{host}:{port}", target, sample, specs, binary, headers))
            model_of.append(m)
    shares = parse_mix(mix, len(models))
    picked = choices(shares, DRAWN, seed=seed + 1)
    counts = [model_of.count(m) for m in range(len(models))]
    seen = [0] * len(models)
    sequence = np.empty(DRAWN, np.int64)
    for i, m in enumerate(picked.tolist()):  # model m's samples in turn
        sequence[i] = first_of[m] + seen[m] % counts[m]
        seen[m] += 1
    return Workload(host, port, tuple(models), tuple(requests), tuple(model_of), sequence, seed)


def _declared(base: str, target: Target, headers: Mapping[str, str], data: str | Path | None) -> list[TensorSpec]:
    """The model's inputs from its metadata; from the data file's arrays when the server has no metadata."""
    try:
        return fetch_inputs(base, target, headers)
    except ClientError as e:
        if data is None or e.status not in (404, 405):
            if e.status in (404, 405):
                e.hint = "check the model name; a server without model metadata needs --inputs or --data"
            raise
        return specs_of_file(data, target.model)


# ---- one load level ----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Measured:
    seconds: float
    cpu: float
    recorded: Recorded
    successes: list[int]  # per model, answered inside the window (the drain's answers are not)


async def measure_level(
    workload: Workload,
    level: Level,
    plan: Plan,
    warmup_s: float,
    progress: Progress | None = None,
    timeout_s: float = 30.0,
    max_connections: int = 1024,
) -> list[Result]:
    """Warm up, then windows until stable or the plan's maximum; one Result per model (plus the mix)."""
    driver = Driver(
        workload.host,
        workload.port,
        workload.requests,
        workload.model_of,
        workload.sequence,
        len(workload.models),
        level,
        max_connections=max_connections,
        timeout_s=timeout_s,
        seed=workload.seed,
    )
    # The collector would pause the loop mid-window for garbage the request path does not make.
    gc.collect()
    gc.disable()
    meter = CpuMeter()
    measured: list[_Measured] = []
    windows: list[Window] = []
    try:
        await driver.start()
        if warmup_s > 0:
            await asyncio.sleep(warmup_s)
        driver.swap()
        # One window ends where the next begins (the time spent summarizing one is inside the next),
        # so every answer is counted in exactly one window's time.
        began = now()
        meter.start()
        while True:
            await _wait_reporting(driver, plan.window_s, began, level, len(windows) + 1, plan, progress)
            recorded = driver.swap()
            ended, cpu = now(), meter.read()
            meter.start()
            seconds, began = ended - began, ended
            measured.append(_Measured(seconds, cpu, recorded, [len(a) for a in recorded.latencies]))
            windows.append(_window(seconds, cpu, recorded))
            if progress:
                w = windows[-1]
                progress(
                    f"{level.label}: window {len(windows)}: {w.throughput:,.0f} req/s, p99 {w.p99_ms:.3f} ms, "
                    f"client CPU {w.client_cpu:.0%}"
                )
            if not measure_another(windows, plan):
                break
        # Open loop: requests scheduled inside the last window but still unanswered are awaited
        # (a server that stalls at the end cannot hide it), their latency recorded, not their count.
        late = await driver.stop(drain_s=min(timeout_s, max(1.0, plan.window_s)))
        measured[-1] = _Measured(seconds, cpu, recorded.add(late), measured[-1].successes)
    finally:
        if driver.running:
            await driver.stop()
        gc.enable()
    return summarize(workload.models, level, measured, windows)


async def _wait_reporting(
    driver: Driver, seconds: float, began: float, level: Level, index: int, plan: Plan, progress: Progress | None
) -> None:
    """Sleep through a window, telling ``progress`` how it goes about once a second."""
    end = began + seconds
    while (left := end - now()) > 0:
        await asyncio.sleep(min(1.0, left))
        if progress and now() < end - 0.05:
            answered = driver.recorded.answered
            progress(f"\r{level.label}: window {index}/{plan.planned}+: {answered / (now() - began):,.0f} req/s so far")


def _window(seconds: float, cpu: float, recorded: Recorded) -> Window:
    latencies = np.concatenate([np.frombuffer(a, np.float64) for a in recorded.latencies])
    errors = sum(sum(e.values()) for e in recorded.errors)
    p99 = float(np.quantile(latencies, 0.99, method="inverted_cdf")) * 1e3 if latencies.size else math.nan
    return Window(seconds, latencies.size + errors, latencies.size, latencies.size / seconds, p99, cpu)


def summarize(
    models: Sequence[str], level: Level, measured: Sequence[_Measured], windows: Sequence[Window]
) -> list[Result]:
    """Per-model results (and one for the whole mix when there are several models)."""
    total_s = sum(m.seconds for m in measured)
    cpu = sum(m.cpu * m.seconds for m in measured) / total_s if total_s else math.nan
    is_stable = stable(windows)
    picks: list[tuple[str, list[int]]] = [(name, [i]) for i, name in enumerate(models)]
    if len(models) > 1:
        picks.append((",".join(models), list(range(len(models)))))
    results = []
    for name, indices in picks:
        merged = Histogram()
        errors: dict[str, int] = {}
        per_window_rate: list[float] = []
        per_window_p99: list[float] = []
        successes = 0
        for m in measured:
            h = Histogram()
            for i in indices:
                h.record(np.frombuffer(m.recorded.latencies[i], np.float64))
                for key, n in m.recorded.errors[i].items():
                    errors[key] = errors.get(key, 0) + n
            merged.merge(h)
            successes += sum(m.successes[i] for i in indices)
            per_window_rate.append(sum(m.successes[i] for i in indices) / m.seconds)
            per_window_p99.append(h.quantile(0.99) * 1e3)
        p50, p90, p99, p999, most = merged.quantiles_ms(QUANTILES)
        results.append(
            Result(
                model=name,
                concurrency=level.concurrency,
                rate=level.rate,
                duration_s=total_s,
                requests=merged.count + sum(errors.values()),
                throughput=successes / total_s if total_s else math.nan,
                p50_ms=p50,
                p90_ms=p90,
                p99_ms=p99,
                p999_ms=p999,
                max_ms=most,
                errors=dict(sorted(errors.items())),
                client_cpu=cpu,
                client_saturated=cpu >= SATURATED,
                windows=len(measured),
                stable=is_stable,
                throughput_ci=mean_interval(per_window_rate),
                p99_ci_ms=mean_interval(per_window_p99),
                arrivals=level.arrivals if level.rate is not None else None,
                offered=sum(m.recorded.scheduled for m in measured) / total_s if level.rate and total_s else None,
            )
        )
    return results


# ---- a run -------------------------------------------------------------------------------------


def levels_of(concurrency: Sequence[int] | None, rate: Sequence[float] | None, arrivals: Arrivals) -> list[Level]:
    if concurrency and rate:
        raise UsageError("choose --concurrency (closed loop) or --rate (open loop), not both")
    if rate:
        return [Level(rate=r, arrivals=arrivals) for r in rate]
    return [Level(concurrency=c) for c in (concurrency or [1])]


async def run_async(
    workload: Workload,
    url: str,
    levels: Sequence[Level],
    plan: Plan,
    warmup_s: float,
    slo_p99_ms: float | None = None,
    progress: Progress | None = None,
    timeout_s: float = 30.0,
    max_connections: int = 1024,
) -> Report:
    results: list[Result] = []
    for level in levels:
        results += await measure_level(workload, level, plan, warmup_s, progress, timeout_s, max_connections)
    slo = None
    if slo_p99_ms is not None:
        slo, tried = await search_slo(
            workload, slo_p99_ms, plan, warmup_s, results, progress, timeout_s, max_connections
        )
        results += tried
    return Report(url, describe_environment(), results, slo, warnings_of(results, slo))


async def search_slo(
    workload: Workload,
    target_ms: float,
    plan: Plan,
    warmup_s: float,
    measured: Sequence[Result],
    progress: Progress | None,
    timeout_s: float,
    max_connections: int,
) -> tuple[SloSearch, list[Result]]:
    """Open-loop (Poisson) rates until the highest meeting the target is found (see ``slo``)."""
    whole = [r for r in measured if r.model == _whole(workload.models)]
    if whole:  # start from half the best throughput measured in this run
        start = max(1.0, max(r.throughput for r in whole) / 2)
    else:  # a short closed loop at concurrency 8 says roughly what the server can do
        quick = Plan(max(0.25, plan.window_s / 2), 3, 3)
        probe = await measure_level(workload, Level(concurrency=8), quick, min(warmup_s, 0.5), None, timeout_s)
        start = max(1.0, next(r for r in probe if r.model == _whole(workload.models)).throughput / 2)
    trials: list[Trial] = []
    tried: list[Result] = []
    by_trial: dict[int, Result] = {}
    # A p99 of fewer than 100 requests is its maximum: rates below that are not worth measuring.
    min_rate = 100 / (plan.planned * plan.window_s)
    while (rate := next_rate(trials, target_ms, start, min_rate=min_rate)) is not None:
        rate = round(rate, 1)
        rows = await measure_level(workload, Level(rate=rate), plan, warmup_s, progress, timeout_s, max_connections)
        tried += rows
        result = next(r for r in rows if r.model == _whole(workload.models))
        offered = result.offered if result.offered is not None else rate
        trial = Trial(offered, result.p99_ms, result.throughput, sum(result.errors.values()), rate)
        by_trial[id(trial)] = result
        trials.append(trial)
        if progress:
            verdict = "meets" if trial.meets(target_ms) else "misses"
            progress(f"slo: {offered:,.1f}/s offered, p99 {result.p99_ms:.3f} ms {verdict} {target_ms:g} ms")
    top = best(trials, target_ms)
    search = SloSearch(
        target_p99_ms=target_ms,
        rate=top.offered if top is not None else None,
        result=by_trial[id(top)] if top is not None else None,
        tried=tuple((t.offered, t.p99_ms, t.meets(target_ms)) for t in trials),
    )
    return search, tried


def _whole(models: Sequence[str]) -> str:
    return models[0] if len(models) == 1 else ",".join(models)


def describe_environment() -> dict[str, object]:
    env = asdict(environment(("leanserve", "numpy", "uvloop", "httptools")))
    env["load_average"] = load_average()
    env["client"] = "leanserve bench: one process, uvloop + httptools, keep-alive HTTP/1.1"
    return env


def warnings_of(results: Sequence[Result], slo: SloSearch | None) -> list[str]:
    out = []
    for r in results:
        where = f"{r.model} at {r.label}"
        if r.client_saturated:
            out.append(
                f"{where}: the load generator used {r.client_cpu:.0%} of its core: it may be measuring itself "
                "(run it on another machine or core, or lower the load)"
            )
        if not r.stable:
            out.append(f"{where}: not stable after {r.windows} windows (the last three differ by over 10%)")
        if r.errors:
            out.append(f"{where}: {sum(r.errors.values())} errors: {r.errors}")
    if slo is not None and slo.rate is None:
        out.append(f"no rate tried kept p99 under {slo.target_p99_ms:g} ms")
    return out


def run(
    url: str,
    model: str | Sequence[str],
    *,
    version: str | None = None,
    concurrency: Sequence[int] | None = None,
    rate: Sequence[float] | float | None = None,
    arrivals: Arrivals = "poisson",
    duration_s: float = 20.0,
    warmup_s: float = 2.0,
    window_s: float | None = None,
    max_windows: int | None = None,
    binary: bool = False,
    data: str | Path | None = None,
    mix: str | None = None,
    slo_p99_ms: float | None = None,
    headers: Mapping[str, str] | None = None,
    timeout_s: float = 30.0,
    max_connections: int = 1024,
    seed: int = 0,
    inputs: Sequence[TensorSpec] | None = None,
    progress: Progress | None = None,
) -> Report:
    """Load ``url``'s ``model`` (or several, mixed) at each level; what ``leanserve bench`` prints.

    Closed loop at each ``concurrency`` (default 1), or open loop at each ``rate`` (requests/s,
    Poisson or constant ``arrivals``); ``slo_p99_ms`` adds the search for the highest rate whose
    p99 stays under it. ``inputs`` declares the models' inputs instead of asking the server.
    Runs its own uvloop event loop: call it from synchronous code.
    """
    models = (model,) if isinstance(model, str) else tuple(model)
    if not models:
        raise UsageError("name at least one model")
    rates = [rate] if isinstance(rate, int | float) else rate
    levels = [] if slo_p99_ms is not None and not concurrency and not rates else levels_of(concurrency, rates, arrivals)
    if duration_s <= 0 or warmup_s < 0:
        raise UsageError("the duration must be positive and the warm-up not negative")
    plan = Plan.for_duration(duration_s, window_s, max_windows)
    workload = prepare(url, models, version, binary, data, mix, headers, seed, inputs)
    if progress:
        what = ", ".join(level.label for level in levels) or f"the rate search for p99 <= {slo_p99_ms:g} ms"
        progress(
            f"{url}: {', '.join(models)}: {len(workload.requests)} requests encoded"
            f" ({'binary' if binary else 'JSON'}); {what}; {warmup_s:g} s warm-up, then windows of"
            f" {plan.window_s:g} s until stable ({plan.planned} to {plan.maximum})"
        )
    try:
        import uvloop

        factory: Callable[[], asyncio.AbstractEventLoop] | None = uvloop.new_event_loop
    except ImportError:  # no uvloop on this platform: asyncio's loop, slower
        factory = None
    with asyncio.Runner(loop_factory=factory) as runner:
        return runner.run(
            run_async(workload, url, levels, plan, warmup_s, slo_p99_ms, progress, timeout_s, max_connections)
        )
