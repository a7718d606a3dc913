"""Always-valid intervals keep their error rate under continuous monitoring; the chi-square and Holm are exact."""

from __future__ import annotations

import math

import numpy as np
import pytest

from leanserve.experiments.statistics import (
    Difference,
    Moments,
    NormalMixture,
    chi2_isf,
    chi2_sf,
    chi_square_statistic,
    holm,
    log_beta_binomial_lr,
    log_dirichlet_multinomial_lr,
    optimal_mixing_ratio,
    proportion_interval,
    proportion_p_value,
    regularized_gamma_q,
    sample_ratio_test,
)

from .support import rejections_means, rejections_rates, wilson

ALPHA = 0.05
MIXTURE = NormalMixture.tuned(10_000, ALPHA)


# ---- the mixture ----------------------------------------------------------------------------------


def test_the_mixing_ratio_solves_its_fixed_point_and_howards_closed_form_is_its_first_step() -> None:
    x = optimal_mixing_ratio(0.05)
    two_l = 2 * math.log(1 / 0.05)
    assert x == pytest.approx(two_l + math.log1p(x), abs=1e-10)
    assert x == pytest.approx(8.21, abs=0.01)
    # Howard et al.'s rho^2 = (2 log(1/alpha) + log(1 + 2 log(1/alpha))) / n*: one step short, 3.4% lower.
    assert two_l + math.log1p(two_l) == pytest.approx(x, rel=0.04)
    assert MIXTURE.rho2 == pytest.approx(x / 10_000)


def test_the_interval_is_narrowest_at_the_planned_sample_size() -> None:
    # Relative to the fixed-sample z interval (1.96 sd), the mixture's width at n is
    # sqrt((1 + x)/x (2 log(1/alpha) + log(1 + x))) sd with x = rho2 n; it is smallest at n = planned.
    ratios = {n: float(MIXTURE.halfwidth(1.0, n, ALPHA)) for n in (1_000, 5_000, 10_000, 20_000, 100_000)}
    assert min(ratios, key=lambda n: ratios[n]) == 10_000
    assert ratios[10_000] == pytest.approx(math.sqrt(1 + optimal_mixing_ratio(ALPHA)))  # 3.03 sd at its best


def test_interval_and_p_value_are_dual() -> None:
    control = Moments.of_counts(100, 1_000)
    candidate = Moments.of_counts(160, 1_000)
    d = Difference.of(control, candidate, MIXTURE)
    assert d.estimate == pytest.approx(0.06)
    i = d.interval(ALPHA)
    assert i.lower > 0  # the interval excludes 0 ...
    assert d.p_value(0.0) <= ALPHA  # ... exactly when the p-value is under alpha
    assert d.p_value(i.lower) == pytest.approx(ALPHA, rel=1e-6)  # the ends are where p = alpha
    assert d.p_value_above(0.0) == d.p_value(0.0) and d.p_value_below(0.0) == 1.0
    # An arm without outcomes: no evidence at all.
    empty = Difference.of(control, Moments.of_counts(0, 0), MIXTURE)
    assert empty.interval(ALPHA).lower == -math.inf and empty.p_value() == 1.0


def test_a_metric_constant_so_far_keeps_a_finite_variance() -> None:
    assert Moments(5, 5.0, 5.0).variance == 1e-12
    assert Moments(1, 1.0, 1.0).variance == math.inf
    assert Moments.of_counts(0, 50).variance == pytest.approx((1 / 52) * (51 / 52))  # no errors yet: not certainty


def test_aa_false_positive_rate_under_continuous_monitoring() -> None:
    """A/A, looked at after every batch: 1,000 experiments, 100 looks each, 100 to 10,000 per arm.

    Measured (seed 2026): conversion 10% vs 10%: 12 false positives in 1,000 (1.2%, 99% Wilson
    interval 0.6%-2.5%); normal means: 18 in 1,000 (1.8%, 1.0%-3.2%). The bound alpha = 5%
    holds with room: the mixture martingale crosses 1/alpha with probability <= alpha at any
    time (Ville's inequality), and discrete looks see only some of its path. The assertion is on
    the simulation's upper 99% bound, not on the point estimate.
    """
    rng = np.random.default_rng(2026)
    for name, rejected in (
        ("rates", rejections_rates(rng, 0.10, 0.10, 1000, 100, 100, MIXTURE, ALPHA)),
        ("means", rejections_means(rng, 0.0, 1000, 100, 100, MIXTURE, ALPHA)),
    ):
        k = int(rejected.sum())
        lo, hi = wilson(k, rejected.size)
        message = f"{name}: {k}/{rejected.size} A/A experiments rejected (99% CI {lo:.3f}-{hi:.3f})"
        assert hi <= ALPHA, message  # even the simulation's upper bound stays under alpha
        print(message)


def test_power_at_the_planned_sample_size() -> None:
    """A known effect, conversion 10% -> 12%, watched every 250 per arm up to 10,000 per arm (the
    planned size): detected in 947 of 1,000 experiments (seed 7; 99% Wilson 92.6%-96.2%).
    10% -> 11.5% at the same size: 726 of 1,000 (seed 8). A fixed-horizon z-test looked at once
    at 10,000 would detect 10% -> 12% 99.9% of the time: the price of looking whenever one likes.
    """
    rng = np.random.default_rng(7)
    rejected = rejections_rates(rng, 0.10, 0.12, 1000, 40, 250, MIXTURE, ALPHA)
    k = int(rejected.sum())
    lo, hi = wilson(k, rejected.size)
    assert lo >= 0.90, f"power {k / rejected.size:.3f} (99% CI {lo:.3f}-{hi:.3f})"


# ---- the beta-binomial mixture ------------------------------------------------------------------


def test_the_beta_binomial_martingale_has_mean_one_under_its_null() -> None:
    # E[M_n] = 1 under p0 exactly: sum over s of Binomial(n, p0) pmf(s) * M(s).
    n, p0, c = 40, 0.9, 50.0
    total = sum(
        math.comb(n, s) * p0**s * (1 - p0) ** (n - s) * math.exp(log_beta_binomial_lr(s, n, p0, c))
        for s in range(n + 1)
    )
    assert total == pytest.approx(1.0, rel=1e-9)


def test_a_proportion_interval_and_its_p_value_agree() -> None:
    c = MIXTURE.concentration
    i = proportion_interval(960, 1000, ALPHA, c)
    assert i.estimate == 0.96 and i.lower < 0.96 < i.upper
    assert proportion_p_value(960, 1000, i.lower, c) == pytest.approx(ALPHA, rel=1e-3)
    assert proportion_p_value(960, 1000, 0.99, c) < ALPHA and not i.contains(0.99)
    assert proportion_interval(0, 0, ALPHA, c).lower == 0.0
    assert proportion_interval(0, 10, ALPHA, c).lower == 0.0  # no failures seen: the lower end is 0


# ---- the chi-square and sample-ratio mismatch --------------------------------------------------


@pytest.mark.parametrize(
    ("x", "dof", "sf"),
    [  # critical values from standard tables
        (3.841458820694124, 1, 0.05),
        (6.634896601021214, 1, 0.01),
        (10.827566170662733, 1, 0.001),
        (5.991464547107979, 2, 0.05),
        (13.815510557964274, 2, 0.001),
        (7.814727903251178, 3, 0.05),
        (16.26623619623813, 3, 0.001),
        (18.307038053275146, 10, 0.05),
        (124.34211340400407, 100, 0.05),
        (0.0, 4, 1.0),
    ],
)
def test_chi_square_survival_function_matches_tables(x: float, dof: int, sf: float) -> None:
    assert chi2_sf(x, dof) == pytest.approx(sf, rel=1e-9)
    if 0 < sf < 1:
        assert chi2_isf(sf, dof) == pytest.approx(x, rel=1e-9)


def test_chi_square_matches_scipy_where_it_is_installed() -> None:
    stats = pytest.importorskip("scipy.stats")
    for dof in (1, 2, 3, 5, 9, 30):
        for x in (0.01, 0.5, 1.0, 4.0, 12.0, 40.0, 90.0):
            assert chi2_sf(x, dof) == pytest.approx(stats.chi2.sf(x, dof), rel=1e-9, abs=1e-300)
    assert regularized_gamma_q(2.5, 1.0) == pytest.approx(stats.gamma.sf(1.0, 2.5), rel=1e-12)


def test_a_52_48_split_against_50_50_is_flagged_and_a_fair_one_is_not() -> None:
    biased = sample_ratio_test([[5200, 4800]], [[0.5, 0.5]], 0.001)
    assert biased.alarm and biased.statistic == pytest.approx(16.0)
    assert biased.p_value == pytest.approx(6.3e-5, rel=0.01)
    fair = sample_ratio_test([[5030, 4970]], [[0.5, 0.5]], 0.001)
    assert not fair.alarm and fair.p_value > 0.5


def test_srm_rates_under_continuous_monitoring() -> None:
    """Looking after every 500 assignments up to 20,000 (40 looks), 1,000 experiments each (seed 11).

    Fair 50/50: the alarm (p < 0.001 at any of the 40 looks) fired in 17 of 1,000 (1.7%, 99%
    Wilson 0.9%-3.1%); at the last look alone, 2 of 1,000. That is why the alarm's alpha is
    0.001 and not 0.05: it is checked continuously and stops the experiment. A true 52/48 split:
    flagged by 10,000 assignments in 82% of experiments and by 20,000 in 99.5%.
    """
    rng = np.random.default_rng(11)
    n = 500 * np.arange(1, 41)
    critical = chi2_isf(0.001, 1)

    def alarms(p: float) -> np.ndarray:
        first = np.cumsum(rng.binomial(500, p, size=(1000, 40)), axis=1)
        return chi_square_statistic(np.stack([first, n - first], axis=-1), [0.5, 0.5]) >= critical

    fair = alarms(0.5).any(axis=1)
    k = int(fair.sum())
    lo, hi = wilson(k, fair.size)
    assert hi <= 0.04, f"fair splits alarmed in {k}/1000 (99% CI {lo:.4f}-{hi:.4f})"
    biased = alarms(0.52)
    assert biased.any(axis=1).mean() >= 0.98, biased.any(axis=1).mean()


def test_srm_over_canary_steps_adds_strata_and_flags_traffic_to_an_empty_arm() -> None:
    steps = [[9900, 100], [9500, 500]]
    shares = [[0.99, 0.01], [0.95, 0.05]]
    ok = sample_ratio_test(steps, shares, 0.001)
    assert ok.dof == 2 and ok.statistic == pytest.approx(0.0) and not ok.alarm
    assert ok.observed == (19400, 600) and ok.expected == pytest.approx((19400.0, 600.0))
    broken = sample_ratio_test([[10, 990]], [[0.0, 1.0]], 0.001)  # the control was meant to get nothing
    assert broken.alarm and broken.p_value == 0.0


def test_the_dirichlet_multinomial_martingale_has_mean_one_under_the_configured_shares() -> None:
    n, w, c = 30, 0.2, 40.0
    total = sum(
        math.comb(n, k) * w**k * (1 - w) ** (n - k) * math.exp(log_dirichlet_multinomial_lr([n - k, k], [1 - w, w], c))
        for k in range(n + 1)
    )
    assert total == pytest.approx(1.0, rel=1e-9)
    assert log_dirichlet_multinomial_lr([5, 3], [1.0, 0.0], c) == math.inf  # traffic where none belongs
    assert log_dirichlet_multinomial_lr([500, 0], [1.0, 0.0], c) == 0.0  # one arm: nothing to test


def test_the_sequential_srm_test_keeps_its_rate_where_the_chi_square_does_not() -> None:
    """A canary's first step (1%) checked after every 100 requests up to 20,000 (200 looks),
    1,000 fair experiments (seed 12). Measured: the chi-square alarm (p < 0.001 at any look)
    fired in 22 of 1,000 (2.2%, 99% Wilson 1.3%-3.7%), the sequential test's in none.

    In a whole simulated canary (1% for 50,000 requests, then 5%, 25%, 50%) checked every 1,000
    requests the chi-square alarm fires in 1.6-1.8% of fair runs, checked every 100 in 4.6-5.0%;
    the sequential test in at most 0.1% (docs/experiments.md).
    """
    rng = np.random.default_rng(12)
    counts = np.cumsum(rng.binomial(100, 0.01, size=(1000, 200)), axis=1)
    n = 100 * np.arange(1, 201)
    shares = [0.99, 0.01]
    chi = chi_square_statistic(np.stack([n - counts, counts], axis=-1), shares) >= chi2_isf(0.001, 1)
    threshold = math.log(1000)
    c = MIXTURE.concentration

    def alarmed(row: np.ndarray) -> bool:
        lrs = (log_dirichlet_multinomial_lr([int(m - k), int(k)], shares, c) for m, k in zip(n, row, strict=True))
        return any(lr >= threshold for lr in lrs)

    sequential = np.array([alarmed(row) for row in counts])
    k_chi, k_seq = int(chi.any(axis=1).sum()), int(sequential.sum())
    print(f"chi-square {k_chi}/1000, sequential {k_seq}/1000")
    assert wilson(k_seq, 1000)[1] <= 0.01, f"sequential: {k_seq}/1000"
    assert k_chi > k_seq, f"chi-square {k_chi}/1000, sequential {k_seq}/1000"


def test_which_srm_test_raises_the_alarm_is_chosen() -> None:
    counts, shares = [[10_400, 9_600]], [[0.5, 0.5]]
    chi = sample_ratio_test(counts, shares, 0.001, "chi_square", MIXTURE.concentration)
    seq = sample_ratio_test(counts, shares, 0.001, "sequential", MIXTURE.concentration)
    assert chi.alarm and seq.alarm and seq.sequential_p == pytest.approx(1.17e-6, rel=0.01)
    assert "chi-square 32.00" in chi.describe() and "sequential test" in seq.describe()
    early = sample_ratio_test([[5200, 4800]], shares, 0.001, "sequential", MIXTURE.concentration)
    assert not early.alarm and early.p_value < 0.001 < early.sequential_p  # the always-valid test asks for more


# ---- several hypotheses ---------------------------------------------------------------------------


def test_holm_adjusts_step_down_in_input_order() -> None:
    assert holm([0.01, 0.04, 0.03, 0.005]) == pytest.approx([0.03, 0.06, 0.06, 0.02])
    assert holm([0.5]) == [0.5] and holm([]) == []
    assert holm([0.9, 0.8]) == [1.0, 1.0]  # capped at 1, and never below an earlier step's
