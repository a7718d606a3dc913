"""Simulations shared by the experiments' tests: vectorized ones for the statistics, and traffic
through a whole :class:`Experiment` for the decisions.

Each vectorized simulation draws per-batch sufficient statistics directly (a binomial count, or a normal
sum with a chi-square within-batch sum of squares), so 1,000 experiments with 100 looks each
cost milliseconds, and runs the package's own vectorized functions on the running totals.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt

from leanserve.experiments import Decision, Experiment
from leanserve.experiments.statistics import NormalMixture, harmonic_n, rate_variance, sample_variance

Z99 = 2.5758293035489004  # two-sided 99% normal quantile


def wilson(successes: int, n: int, z: float = Z99) -> tuple[float, float]:
    """Wilson score interval for a binomial rate: the simulation's own uncertainty (99% by default)."""
    p = successes / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return max(0.0, centre - half), min(1.0, centre + half)


def looks(batch: int, count: int) -> npt.NDArray[np.float64]:
    return batch * np.arange(1, count + 1, dtype=np.float64)


def rejections_rates(
    rng: np.random.Generator,
    p_a: float,
    p_b: float,
    sims: int,
    batches: int,
    batch: int,
    mixture: NormalMixture,
    alpha: float,
) -> npt.NDArray[np.bool_]:
    """Per simulated experiment: whether the always-valid interval for p_b - p_a ever excluded 0,
    looking after every batch of ``batch`` observations per arm."""
    s_a = np.cumsum(rng.binomial(batch, p_a, size=(sims, batches)), axis=1)
    s_b = np.cumsum(rng.binomial(batch, p_b, size=(sims, batches)), axis=1)
    n = looks(batch, batches)
    variance = rate_variance(s_a, n) / n + rate_variance(s_b, n) / n
    llr = mixture.log_lr(s_b / n - s_a / n, 0.0, variance, harmonic_n(n, n))
    return np.asarray((llr >= math.log(1 / alpha)).any(axis=1))


def rejections_means(
    rng: np.random.Generator,
    shift: float,
    sims: int,
    batches: int,
    batch: int,
    mixture: NormalMixture,
    alpha: float,
) -> npt.NDArray[np.bool_]:
    """As :func:`rejections_rates`, for normal outcomes (sd 1) whose means differ by ``shift``."""

    def arm(mean: float) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.float64]]:
        total = rng.normal(batch * mean, math.sqrt(batch), size=(sims, batches))
        within = rng.chisquare(batch - 1, size=(sims, batches))  # (b - 1) s^2 for sd 1
        return np.cumsum(total, axis=1), np.cumsum(within + total**2 / batch, axis=1)

    t_a, q_a = arm(0.0)
    t_b, q_b = arm(shift)
    n = looks(batch, batches)
    variance = sample_variance(n, t_a, q_a) / n + sample_variance(n, t_b, q_b) / n
    llr = mixture.log_lr(t_b / n - t_a / n, 0.0, variance, harmonic_n(n, n))
    return np.asarray((llr >= math.log(1 / alpha)).any(axis=1))


@dataclass
class Served:
    """What a simulated run of an experiment did."""

    requests: int = 0
    candidate_requests: int = 0
    decisions: list[Decision] = field(default_factory=list)  # every evaluation's, in order


def serve(
    experiment: Experiment,
    rng: random.Random,
    requests: int,
    *,
    candidate_slowdown: float = 1.0,
    control_errors: float = 0.01,
    candidate_errors: float = 0.01,
    evaluate_every: int = 1000,
) -> Served:
    """Simulated traffic through an experiment until it finishes or ``requests`` run out.

    Each request comes from a fresh unit, lognormal latency (median 20 ms, sigma 0.5) times the
    candidate's slowdown, and fails with the arm's error rate. ``evaluate()`` every
    ``evaluate_every`` requests stands in for the evaluator thread's tick, deterministically.
    """
    served = Served()
    for i in range(requests):
        arm = experiment.choose_arm(f"unit-{rng.getrandbits(48)}")
        candidate = arm != experiment.config.control
        latency = rng.lognormvariate(math.log(0.02), 0.5) * (candidate_slowdown if candidate else 1.0)
        ok = rng.random() >= (candidate_errors if candidate else control_errors)
        experiment.record(arm, latency, ok)
        served.requests += 1
        served.candidate_requests += candidate
        if (i + 1) % evaluate_every == 0:
            served.decisions.append(experiment.evaluate())
            if experiment.state.phase != "running":
                break
    return served
