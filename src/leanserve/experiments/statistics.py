"""Always-valid inference for comparing arms: pure functions of counts and sums, vectorized with numpy.

An experiment is watched continuously, so every interval and p-value here stays valid however
often it is looked at and whenever the experiment stops (Ville's inequality on a test
martingale), unlike a t-test, whose error rate grows with every peek.

- Differences of means and of rates: the mixture sequential probability ratio test (mSPRT) of
  Johari, Pekelis and Walsh (2017) with a normal mixing distribution N(0, tau^2) over the
  difference. With tau^2 = rho^2 times the per-observation variance it is the asymptotic
  confidence sequence of Howard, Ramdas, McAuliffe and Sekhon (2021) that GrowthBook uses, and
  rho is chosen the same way: to make the interval tightest at the sample size where the
  experiment is expected to decide (:meth:`NormalMixture.tuned`).
- One rate against a bound (a shadow's agreement), and the ranks behind quantile intervals: an
  exact beta-binomial mixture martingale, valid at every sample size without asymptotics.
- Sample-ratio mismatch: Pearson's chi-square goodness of fit against the configured weights,
  with the chi-square survival function written here (no scipy).
- Several hypotheses at once: Holm's step-down adjustment.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np
import numpy.typing as npt

FloatArray = npt.NDArray[np.float64]


@dataclass(frozen=True, slots=True)
class Interval:
    """A point estimate and the always-valid interval around it; the ends may be infinite."""

    estimate: float
    lower: float
    upper: float

    def contains(self, value: float) -> bool:
        return self.lower <= value <= self.upper

    def as_dict(self) -> dict[str, float | str | None]:
        """JSON-able: infinities as "inf" / "-inf", NaN as null (JSON has neither)."""
        return {name: json_number(getattr(self, name)) for name in ("estimate", "lower", "upper")}


def json_number(x: float) -> float | str | None:
    """A float JSON can carry: infinities as strings, NaN as null."""
    if math.isnan(x):
        return None
    if math.isinf(x):
        return "inf" if x > 0 else "-inf"
    return float(x)


# ---- the normal mixture (mSPRT) -------------------------------------------------------------


def optimal_mixing_ratio(alpha: float) -> float:
    """x* = tau^2 / V at which the mixture interval is narrowest, V the estimate's variance.

    The half-width is sqrt(V (1 + x) / x (2 log(1/alpha) + log(1 + x))) with x = tau^2 / V;
    setting its derivative in x to zero gives x = 2 log(1/alpha) + log(1 + x), solved here by
    fixed-point iteration (Howard et al.'s closed form is its first iterate). About 8.2 at
    alpha = 0.05.
    """
    if not 0 < alpha < 1:
        raise ValueError(f"alpha must lie strictly between 0 and 1, got {alpha}")
    two_l = 2.0 * math.log(1.0 / alpha)
    x = two_l
    for _ in range(100):  # a contraction (slope 1/(1+x) < 1): converges in a handful of steps
        nxt = two_l + math.log1p(x)
        if abs(nxt - x) < 1e-12:
            break
        x = nxt
    return x


@dataclass(frozen=True, slots=True)
class NormalMixture:
    """mSPRT for a difference of two means with a normal mixing distribution N(0, tau^2).

    ``rho2`` fixes tau^2 relative to the data's own scale: tau^2 = rho2 * n_eff * V, where V is
    the variance of the estimated difference and n_eff the harmonic mean of the two arms'
    sample sizes. With equal per-observation variances sigma^2 in both arms that is
    tau^2 = 2 rho2 sigma^2, a constant, as the mixture needs. :meth:`tuned` picks
    rho2 = x* / planned so that tau^2 = x* V(planned): the interval is at its narrowest when
    each arm has ``planned`` observations, and wider (but still valid) before and after.
    """

    rho2: float

    @classmethod
    def tuned(cls, planned: int, alpha: float) -> NormalMixture:
        if planned < 1:
            raise ValueError(f"planned sample size must be at least 1, got {planned}")
        return cls(optimal_mixing_ratio(alpha) / planned)

    @property
    def concentration(self) -> float:
        """The beta-binomial mixture's prior strength on the same scale: its prior variance
        p(1-p)/(c+1) equals rho2 times the Bernoulli variance p(1-p)."""
        return max(1.0 / self.rho2 - 1.0, 1e-9)

    def halfwidth(self, variance: FloatArray | float, n_eff: FloatArray | float, alpha: float) -> FloatArray:
        """Half-width of the always-valid interval for a difference with variance V after n_eff."""
        x = self.rho2 * np.asarray(n_eff, dtype=np.float64)
        with np.errstate(divide="ignore", invalid="ignore"):
            width2 = np.asarray(variance) * (1.0 + x) / x * (2.0 * math.log(1.0 / alpha) + np.log1p(x))
        return np.where(x > 0, np.sqrt(width2), np.inf)

    def log_lr(
        self, estimate: FloatArray | float, null: float, variance: FloatArray | float, n_eff: FloatArray | float
    ) -> FloatArray:
        """log of the mixture likelihood ratio against ``difference == null``.

        Lambda = (1 + x)^(-1/2) exp(z^2 x / (2 (1 + x))), with z^2 = (estimate - null)^2 / V.
        """
        x = self.rho2 * np.asarray(n_eff, dtype=np.float64)
        with np.errstate(divide="ignore", invalid="ignore"):
            z2 = (np.asarray(estimate) - null) ** 2 / np.asarray(variance)
        z2 = np.nan_to_num(z2, nan=0.0, posinf=np.inf)
        return np.asarray(0.5 * (z2 * x / (1.0 + x) - np.log1p(x)), dtype=np.float64)


def harmonic_n(n_a: FloatArray | float, n_b: FloatArray | float) -> FloatArray:
    """2 / (1/n_a + 1/n_b): the effective sample size of a two-sample difference (0 if either is 0)."""
    a = np.asarray(n_a, dtype=np.float64)
    b = np.asarray(n_b, dtype=np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        h = 2.0 * a * b / (a + b)
    return np.nan_to_num(h, nan=0.0)


@dataclass(frozen=True, slots=True)
class Moments:
    """Sufficient statistics of one arm on one metric: count, sum and sum of squares.

    ``binary`` marks 0/1 outcomes (errors, conversions), whose variance is taken from the
    smoothed rate (s+1)/(n+2): a run without a single error still has a rate's uncertainty.
    """

    n: int
    total: float
    total_sq: float
    binary: bool = False

    @classmethod
    def of_counts(cls, successes: int, n: int) -> Moments:
        return cls(n, float(successes), float(successes), binary=True)

    @property
    def mean(self) -> float:
        return self.total / self.n if self.n else math.nan

    @property
    def variance(self) -> float:
        """Per-observation variance; infinite while it cannot be estimated."""
        if self.binary:
            return float(rate_variance(self.total, self.n))
        return float(sample_variance(self.n, self.total, self.total_sq))


def rate_variance(successes: FloatArray | float, n: FloatArray | float) -> FloatArray:
    """Bernoulli variance from the smoothed rate (s + 1) / (n + 2); infinite at n = 0."""
    s = np.asarray(successes, dtype=np.float64)
    m = np.asarray(n, dtype=np.float64)
    p = (s + 1.0) / (m + 2.0)
    return np.where(m > 0, p * (1.0 - p), np.inf)


def sample_variance(n: FloatArray | float, total: FloatArray | float, total_sq: FloatArray | float) -> FloatArray:
    """Unbiased variance from sums; infinite below two observations.

    A floor of 1e-12 keeps a metric that happened to be constant so far from claiming certainty.
    """
    m = np.asarray(n, dtype=np.float64)
    t = np.asarray(total, dtype=np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        v = (np.asarray(total_sq, dtype=np.float64) - t * t / m) / (m - 1.0)
    return np.where(m >= 2, np.maximum(np.nan_to_num(v, nan=0.0), 1e-12), np.inf)


@dataclass(frozen=True, slots=True)
class Difference:
    """candidate - control on one metric, with what the mixture needs for any null or level."""

    estimate: float
    variance: float  # of the estimate
    n_eff: float
    mixture: NormalMixture

    @classmethod
    def of(cls, control: Moments, candidate: Moments, mixture: NormalMixture) -> Difference:
        variance = candidate.variance / max(candidate.n, 1) + control.variance / max(control.n, 1)
        return cls(candidate.mean - control.mean, variance, float(harmonic_n(control.n, candidate.n)), mixture)

    @property
    def ready(self) -> bool:
        return self.n_eff > 0 and math.isfinite(self.variance) and math.isfinite(self.estimate)

    def interval(self, alpha: float) -> Interval:
        if not self.ready:
            return Interval(self.estimate, -math.inf, math.inf)
        h = float(self.mixture.halfwidth(self.variance, self.n_eff, alpha))
        return Interval(self.estimate, self.estimate - h, self.estimate + h)

    def p_value(self, null: float = 0.0) -> float:
        """Always-valid p-value of ``difference == null``: min(1, 1/Lambda)."""
        if not self.ready:
            return 1.0
        return min(1.0, math.exp(-float(self.mixture.log_lr(self.estimate, null, self.variance, self.n_eff))))

    def p_value_above(self, bound: float) -> float:
        """p-value of "difference <= bound" (rejected: the difference exceeds the bound)."""
        return self.p_value(bound) if self.estimate > bound else 1.0

    def p_value_below(self, bound: float) -> float:
        """p-value of "difference >= bound" (rejected: the difference lies under the bound)."""
        return self.p_value(bound) if self.estimate < bound else 1.0


# ---- the beta-binomial mixture ----------------------------------------------------------------


def log_beta_binomial_lr(successes: int, n: int, p0: float, concentration: float) -> float:
    """log of the beta-binomial mixture martingale against "each trial succeeds with p0".

    M = B(a + s, b + n - s) / B(a, b) / (p0^s (1 - p0)^(n - s)), a = c p0, b = c (1 - p0): the
    likelihood of the data averaged over rates drawn from Beta(a, b), over their likelihood at
    p0. Under p0 it is a non-negative martingale with mean 1, so P(ever >= 1/alpha) <= alpha,
    exactly, at every n.
    """
    if not 0 < p0 < 1:
        raise ValueError(f"p0 must lie strictly between 0 and 1, got {p0}")
    a = concentration * p0
    b = concentration * (1.0 - p0)
    f = n - successes
    log_b_post = math.lgamma(a + successes) + math.lgamma(b + f) - math.lgamma(a + b + n)
    log_b_prior = math.lgamma(a) + math.lgamma(b) - math.lgamma(a + b)
    return log_b_post - log_b_prior - successes * math.log(p0) - f * math.log1p(-p0)


def proportion_p_value(successes: int, n: int, p0: float, concentration: float) -> float:
    """Always-valid p-value of "the rate is p0"."""
    return min(1.0, math.exp(-log_beta_binomial_lr(successes, n, p0, concentration)))


def proportion_interval(successes: int, n: int, alpha: float, concentration: float) -> Interval:
    """The rates not rejected at ``alpha``; each end found by bisection from the observed rate."""
    if n == 0:
        return Interval(math.nan, 0.0, 1.0)
    rate = successes / n
    threshold = math.log(1.0 / alpha)

    def rejected(p0: float) -> bool:
        return log_beta_binomial_lr(successes, n, p0, concentration) >= threshold

    def end(inside: float, outside: float, extreme: float) -> float:
        if not rejected(outside):
            return extreme
        for _ in range(60):
            mid = 0.5 * (inside + outside)
            if rejected(mid):
                outside = mid
            else:
                inside = mid
        return inside

    # The mixture needs p0 inside (0, 1): the search stops 1e-12 short of either end.
    centre = min(max(rate, 1e-9), 1 - 1e-9)
    return Interval(rate, end(centre, 1e-12, 0.0), end(centre, 1 - 1e-12, 1.0))


# ---- sample-ratio mismatch ---------------------------------------------------------------------


def regularized_gamma_q(a: float, x: float) -> float:
    """Q(a, x) = Gamma(a, x) / Gamma(a), the upper regularized incomplete gamma function.

    The series for P below x < a + 1 and Lentz's continued fraction above it, each where it
    converges fast (Numerical Recipes, 6.2); relative accuracy near 1e-14.
    """
    if a <= 0 or x < 0:
        raise ValueError(f"need a > 0 and x >= 0, got a={a}, x={x}")
    if x == 0:
        return 1.0
    log_prefix = a * math.log(x) - x - math.lgamma(a)
    if x < a + 1:
        term = total = 1.0 / a
        ap = a
        for _ in range(10_000):
            ap += 1
            term *= x / ap
            total += term
            if abs(term) < abs(total) * 1e-16:
                break
        return max(0.0, 1.0 - total * math.exp(log_prefix))
    tiny = 1e-300
    b = x + 1 - a
    c = 1 / tiny
    d = 1 / b
    h = d
    for i in range(1, 10_000):
        an = -i * (i - a)
        b += 2
        d = an * d + b
        d = tiny if abs(d) < tiny else d
        c = b + an / c
        c = tiny if abs(c) < tiny else c
        d = 1 / d
        delta = d * c
        h *= delta
        if abs(delta - 1) < 1e-16:
            break
    return math.exp(log_prefix) * h


def chi2_sf(x: float, dof: int) -> float:
    """P(X >= x) for X chi-square with ``dof`` degrees of freedom."""
    if dof < 1:
        raise ValueError(f"degrees of freedom must be at least 1, got {dof}")
    if x <= 0:
        return 1.0
    if dof == 1:
        return math.erfc(math.sqrt(x / 2))
    if dof == 2:
        return math.exp(-x / 2)
    return regularized_gamma_q(dof / 2, x / 2)


def chi2_isf(p: float, dof: int) -> float:
    """The x with chi2_sf(x, dof) = p (by bisection; sf is decreasing)."""
    if not 0 < p < 1:
        raise ValueError(f"p must lie strictly between 0 and 1, got {p}")
    lo, hi = 0.0, float(max(dof, 1))
    while chi2_sf(hi, dof) > p:
        lo, hi = hi, hi * 2
    for _ in range(200):
        mid = 0.5 * (lo + hi)
        lo, hi = (mid, hi) if chi2_sf(mid, dof) > p else (lo, mid)
        if hi - lo < 1e-12 * hi:
            break
    return 0.5 * (lo + hi)


def chi_square_statistic(observed: npt.ArrayLike, shares: npt.ArrayLike) -> FloatArray:
    """Pearson's sum of (O - E)^2 / E over the last axis, E = total * share (shares sum to 1).

    Vectorized: ``observed`` of shape (..., arms) gives one statistic per leading index.
    """
    o = np.asarray(observed, dtype=np.float64)
    s = np.asarray(shares, dtype=np.float64)
    expected = o.sum(axis=-1, keepdims=True) * s
    with np.errstate(divide="ignore", invalid="ignore"):
        terms = np.where(expected > 0, (o - expected) ** 2 / expected, np.where(o > 0, np.inf, 0.0))
    return np.asarray(terms.sum(axis=-1), dtype=np.float64)


def log_dirichlet_multinomial_lr(counts: Sequence[int], shares: Sequence[float], concentration: float) -> float:
    """log Bayes factor of a Dirichlet(c * shares)-multinomial against the multinomial at ``shares``.

    Lindon and Malek's sequential sample-ratio test (2022): under the configured shares it is a
    non-negative martingale with mean 1, so its reciprocal is an always-valid p-value. Counts on
    an arm of share 0 make it infinite (no multinomial at those shares can produce them).
    """
    if any(n > 0 and w <= 0 for n, w in zip(counts, shares, strict=True)):
        return math.inf
    pairs = [(n, w) for n, w in zip(counts, shares, strict=True) if w > 0]
    a_total = concentration * sum(w for _, w in pairs)
    n_total = sum(n for n, _ in pairs)
    result = math.lgamma(a_total) - math.lgamma(a_total + n_total)
    for n, w in pairs:
        a = concentration * w
        result += math.lgamma(a + n) - math.lgamma(a) - n * math.log(w)
    return result


SrmTest = Literal["chi_square", "sequential"]


@dataclass(frozen=True, slots=True)
class SampleRatio:
    """Assignment counts against the configured shares, by two tests.

    ``p_value`` is Pearson's chi-square goodness of fit, exact for one look and the classic
    check; ``sequential_p`` is the always-valid Dirichlet-multinomial test, which stays valid
    however often it is looked at. ``test`` names the one whose p-value raises the alarm.
    """

    statistic: float  # chi-square
    dof: int
    p_value: float  # chi-square
    sequential_p: float
    test: SrmTest
    alarm: bool
    observed: tuple[int, ...]  # per arm, over all strata
    expected: tuple[float, ...]

    @property
    def alarm_p(self) -> float:
        return self.p_value if self.test == "chi_square" else self.sequential_p

    def describe(self) -> str:
        if self.test == "chi_square":
            return f"chi-square {self.statistic:.2f} on {self.dof} dof, p = {self.p_value:.2g}"
        return f"sequential test p = {self.sequential_p:.2g} (chi-square p = {self.p_value:.2g})"


def sample_ratio_test(
    observed: Sequence[Sequence[int]],
    shares: Sequence[Sequence[float]],
    alpha: float,
    test: SrmTest = "chi_square",
    concentration: float = 1000.0,
) -> SampleRatio:
    """Sample-ratio mismatch over strata (a canary's steps), each with its own configured shares.

    Chi-square statistics and degrees of freedom of the strata add up (independent strata), and
    so do the sequential test's log Bayes factors (the strata follow each other in time, and a
    product of martingales over successive periods is one). An arm with share 0 that received
    requests is a mismatch outright (p = 0): a routing bug.
    """
    if len(observed) != len(shares):
        raise ValueError(f"{len(observed)} strata of counts but {len(shares)} of shares")
    statistic = 0.0
    log_lr = 0.0
    dof = 0
    arms = len(observed[0]) if observed else 0
    totals_o = [0] * arms
    totals_e = [0.0] * arms
    for counts, weights in zip(observed, shares, strict=True):
        n = sum(counts)
        if n == 0:
            continue
        statistic += float(chi_square_statistic(counts, weights))
        log_lr += log_dirichlet_multinomial_lr(counts, weights, concentration)
        dof += max(sum(1 for w in weights if w > 0) - 1, 0)
        for i, (c, w) in enumerate(zip(counts, weights, strict=True)):
            totals_o[i] += c
            totals_e[i] += n * w
    p = 0.0 if math.isinf(statistic) else chi2_sf(statistic, dof) if dof > 0 else 1.0
    sequential_p = min(1.0, math.exp(-log_lr)) if log_lr < math.inf else 0.0
    alarm = (p if test == "chi_square" else sequential_p) < alpha
    return SampleRatio(statistic, dof, p, sequential_p, test, alarm, tuple(totals_o), tuple(totals_e))


# ---- several hypotheses -------------------------------------------------------------------------


def holm(p_values: Sequence[float]) -> list[float]:
    """Holm-Bonferroni adjusted p-values, in the input's order: reject where adjusted <= alpha.

    The i-th smallest p is multiplied by (m - i), and the running maximum keeps the step-down
    order. Controls the family-wise error rate under any dependence between the tests, which
    always-valid p-values (each valid at any stopping time) satisfy.
    """
    m = len(p_values)
    order = sorted(range(m), key=lambda i: p_values[i])
    adjusted = [1.0] * m
    running = 0.0
    for rank, i in enumerate(order):
        running = max(running, min(1.0, (m - rank) * p_values[i]))
        adjusted[i] = running
    return adjusted
