"""Seed statistics against closed forms and constructed outcomes (sweeper/reporting/stats.py)."""
import math

import numpy as np
import pytest

from sweeper.reporting.stats import Comparison, mean_interval, paired_comparison, spearman, verdict

# Student t with 2 degrees of freedom has the closed-form quantile (2p - 1) / sqrt(2p(1 - p)); here p = 0.975
T_975_2 = 0.95 / math.sqrt(2 * 0.975 * 0.025)


def test_mean_interval_is_the_t_interval_of_the_finite_values():
    est = mean_interval([1.0, 2.0, 3.0, float("nan"), None])
    t_975_2 = T_975_2
    assert (est.n, est.mean) == (3, 2.0)
    assert est.low == pytest.approx(2.0 - t_975_2 / math.sqrt(3), rel=1e-12)
    assert est.high == pytest.approx(2.0 + t_975_2 / math.sqrt(3), rel=1e-12)
    one = mean_interval([0.5])
    assert (one.n, one.mean, one.low, one.high) == (1, 0.5, None, None)
    assert mean_interval([]).n == 0


def test_paired_t_test_matches_the_closed_form_for_two_degrees_of_freedom():
    # differences 1, 2, 3 (maximizing): mean 2, s = 1, t = 2 / (1 / sqrt 3) = sqrt 12; with 2 dof the t survival
    # function is (1 - t / sqrt(t^2 + 2)) / 2
    first = {0: 11.0, 1: 12.0, 2: 13.0, 7: 99.0}
    second = {0: 10.0, 1: 10.0, 2: 10.0, 8: 0.0}
    c = paired_comparison(first, second, maximize=True)
    t = math.sqrt(12)
    assert c.n == 3 and c.difference == 2.0
    assert c.p_value == pytest.approx(1 - t / math.sqrt(t * t + 2), rel=1e-9)
    assert c.low == pytest.approx(2.0 - T_975_2 / math.sqrt(3), rel=1e-12)
    assert not c.separated  # p = 0.074
    minimizing = paired_comparison(first, second, maximize=False)
    assert minimizing.difference == -2.0 and minimizing.p_value == pytest.approx(c.p_value)


def test_configs_whose_seeds_overlap_are_not_distinguishable():
    rng = np.random.default_rng(0)
    a = {s: 0.90 + 0.01 * rng.standard_normal() for s in range(5)}
    b = {s: a[s] + 0.01 * rng.standard_normal() for s in range(5)}  # same mean, noise as large as the values' spread
    c = paired_comparison(a, b, maximize=True)
    assert c.n == 5 and not c.separated and c.low < 0 < c.high
    sentence = verdict("width=128", "width=64", c, "best/val_accuracy")
    assert sentence.startswith("width=128 and width=64 are not distinguishable with 5 seeds")


def test_a_clear_difference_has_the_right_sign_and_an_interval_holding_the_truth():
    rng = np.random.default_rng(1)
    truth = 0.004
    base = {s: 0.95 + 0.01 * rng.standard_normal() for s in range(6)}  # seed effect, shared by both configs
    better = {s: v + truth + 0.0005 * rng.standard_normal() for s, v in base.items()}
    c = paired_comparison(better, base, maximize=True)
    assert c.separated and c.difference > 0 and c.low <= truth <= c.high
    sentence = verdict("width=128", "width=64", c, "best/val_accuracy")
    assert sentence == ("width=128 beats width=64 by 0.41 pp val accuracy "
                        "(95 % CI 0.39 to 0.43, 6 seeds, p < 0.001, paired t-test).")
    loss = paired_comparison({s: -v for s, v in better.items()}, {s: -v for s, v in base.items()}, maximize=False)
    assert loss.difference == pytest.approx(c.difference) and loss.separated


def test_one_shared_seed_or_none_makes_no_claim():
    one = paired_comparison({0: 0.9, 1: 0.8}, {0: 0.5, 2: 0.1}, maximize=True)
    assert (one.n, one.p_value, one.separated) == (1, None, False)
    assert "no statement about seed noise can be made" in verdict("a", "b", one, "best/val_accuracy")
    none = paired_comparison({0: float("nan")}, {0: 0.5}, maximize=True)
    assert none.n == 0 and "cannot be compared" in verdict("a", "b", none, "best/val_loss")


def test_identical_shifts_on_every_seed_are_a_point_interval():
    c = paired_comparison({0: 1.0, 1: 2.0}, {0: 1.5, 1: 2.5}, maximize=False)
    assert c == Comparison(2, 0.5, 0.5, 0.5, 0.0)
    assert verdict("a", "b", c, "best/val_loss") == (
        "a beats b by 0.5 val loss (95 % CI 0.5 to 0.5, 2 seeds, p < 0.001, paired t-test).")


def test_spearman_matches_scipy_with_ties_and_is_none_without_ranks():
    from scipy.stats import spearmanr  # the independent reference (the report does not import scipy.stats)

    rng = np.random.default_rng(3)
    for n in (2, 3, 7, 40):
        for _ in range(20):
            x = rng.integers(0, 4, size=n).astype(float) if n > 2 else rng.normal(size=n)  # many ties
            y = rng.normal(size=n).round(1)
            expected = spearmanr(x, y).statistic
            found = spearman(list(x), list(y))
            assert (found is None) == (not math.isfinite(expected)), (x, y, expected, found)
            if found is not None:
                assert found == pytest.approx(expected, abs=1e-12), (x, y)
    assert spearman([1, 2, 3, 4], [10, 20, 30, 40]) == 1.0
    assert spearman([1, 2, 3, 4], [4, 3, 2, 1]) == -1.0
    # ranks 1, 2.5, 2.5, 4 against 1, 3, 2, 4: deviations (-1.5, 0, 0, 1.5), (-1.5, .5, -.5, 1.5); 4.5 / sqrt(4.5 * 5)
    assert spearman([1, 2, 2, 3], [1, 3, 2, 4]) == pytest.approx(3 / math.sqrt(10))
    assert spearman([5, 5, 5], [1, 2, 3]) is None and spearman([1, 2, 3], [0.5, 0.5, 0.5]) is None
