"""Seed noise, made explicit: a config's objective over its seeds as n, mean and a confidence interval, and the best
config against another, paired over the seeds both ran.

Why a paired t-test (not an exact permutation test): runs of two configs with the same seed share their data order
and, for equal shapes, their initial weights, so the per-seed differences carry less noise than the two means; pairing
removes the seed's own effect. The exact sign-flip permutation test over n seeds cannot give p below 2 / 2**n
(0.0625 at 5 seeds, two-sided), so with the few seeds a sweep affords it could never call any difference; the
t-test is exact when the per-seed differences are normal (a sum of many small effects) and its interval and p-value
agree (the interval excludes 0 exactly when p < 1 - confidence). Both are two-sided.

Pure Python + scipy.special's Student t (imported when a test is computed: the report path, never a job's;
scipy.special, not scipy.stats, whose import alone took 0.6 s at every sweep's end).
"""
from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

CONFIDENCE = 0.95


@dataclass(frozen=True)
class Estimate:
    """A config's objective over its seeds: n finite values, their mean and a `confidence` t-interval (low and high
    are None below two values)."""

    n: int
    mean: float | None
    low: float | None
    high: float | None
    confidence: float = CONFIDENCE


def _t_quantile(confidence: float, dof: int) -> float:
    from scipy.special import stdtrit

    return float(stdtrit(dof, 0.5 + confidence / 2))


def is_finite(value: Any) -> bool:
    """A real number that is not NaN or inf (None and a diverged run's NaN loss are not)."""
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def finite(values: Sequence[Any]) -> list[float]:
    """The finite numbers among `values`, as floats."""
    return [float(v) for v in values if is_finite(v)]


def mean_interval(values: Sequence[Any], confidence: float = CONFIDENCE) -> Estimate:
    """n, mean and the two-sided `confidence` t-interval of the finite `values` (mean ± t·s/√n, s with n - 1)."""
    xs = finite(values)
    n = len(xs)
    if n == 0:
        return Estimate(0, None, None, None, confidence)
    mean = math.fsum(xs) / n
    if n == 1:
        return Estimate(1, mean, None, None, confidence)
    sd = math.sqrt(math.fsum((x - mean) ** 2 for x in xs) / (n - 1))
    half = _t_quantile(confidence, n - 1) * sd / math.sqrt(n)
    return Estimate(n, mean, mean - half, mean + half, confidence)


@dataclass(frozen=True)
class Comparison:
    """A config against another over their shared seeds, oriented so that a positive difference means the first is
    better (higher when maximizing, lower when minimizing): n shared seeds, the mean per-seed difference, its
    `confidence` t-interval and the paired t-test's two-sided p-value (interval and p are None below 2 seeds)."""

    n: int
    difference: float | None
    low: float | None
    high: float | None
    p_value: float | None
    confidence: float = CONFIDENCE

    @property
    def separated(self) -> bool:
        """The difference is distinguishable from seed noise at `confidence` (p < 1 - confidence)."""
        return self.p_value is not None and self.p_value < 1 - self.confidence


def paired_comparison(first: Mapping[Any, Any], second: Mapping[Any, Any], maximize: bool,
                      confidence: float = CONFIDENCE) -> Comparison:
    """`first` against `second`, each {seed: objective}, paired over the seeds where both are finite."""
    shared = [s for s in first if s in second and is_finite(first[s]) and is_finite(second[s])]
    sign = 1.0 if maximize else -1.0
    diffs = [sign * (float(first[s]) - float(second[s])) for s in shared]
    n = len(diffs)
    if n == 0:
        return Comparison(0, None, None, None, None, confidence)
    mean = math.fsum(diffs) / n
    if n == 1:
        return Comparison(1, mean, None, None, None, confidence)
    sd = math.sqrt(math.fsum((d - mean) ** 2 for d in diffs) / (n - 1))
    if sd == 0.0:  # every seed moved by exactly the same amount: the interval is a point
        return Comparison(n, mean, mean, mean, 1.0 if mean == 0.0 else 0.0, confidence)
    from scipy.special import stdtr

    se = sd / math.sqrt(n)
    half = _t_quantile(confidence, n - 1) * se
    p = float(2 * stdtr(n - 1, -abs(mean) / se))
    return Comparison(n, mean, mean - half, mean + half, p, confidence)


def _is_accuracy(metric: str) -> bool:
    return "accuracy" in metric


def format_difference(value: float, metric: str, unit: bool = True) -> str:
    """An objective difference at 2 significant digits: accuracies in percentage points (0.0031 -> '0.31 pp')."""
    if _is_accuracy(metric):
        return f"{value * 100:.2g}" + (" pp" if unit else "")
    return f"{value:.2g}"


def format_p(p: float) -> str:
    return "p < 0.001" if p < 0.001 else f"p = {p:.2g}"


def metric_words(metric: str) -> str:
    """'best/val_accuracy' -> 'val accuracy', 'final/val_loss' -> 'final val loss' (best/ is the usual objective)."""
    stage, _, name = metric.rpartition("/")
    words = name.replace("_", " ")
    return words if stage in ("", "best") else f"{stage} {words}"


def verdict(best: str, other: str, comparison: Comparison, metric: str) -> str:
    """One plain sentence on `best` (the config that ranks first) against `other` (the runner-up) for `metric`."""
    c = comparison
    what = metric_words(metric)
    if c.n == 0:
        return f"{best} and {other} share no seed with a finite {what}: they cannot be compared."
    if c.n == 1:
        return (f"{best} and {other} share one seed: no statement about seed noise can be made "
                f"(run more seeds, e.g. trainer.seed=0,1,2).")
    level = f"{round(c.confidence * 100):g} %"
    low, high = (format_difference(v, metric, unit=False) for v in (c.low, c.high))
    interval = f"{level} CI {low} to {high}"
    evidence = f"{interval}, {c.n} seeds, {format_p(c.p_value)}, paired t-test"
    if c.separated:
        verb = "beats" if c.difference > 0 else "is worse than"
        return f"{best} {verb} {other} by {format_difference(abs(c.difference), metric)} {what} ({evidence})."
    return (f"{best} and {other} are not distinguishable with {c.n} seeds: difference "
            f"{format_difference(c.difference, metric)} {what} ({evidence}).")


def spearman(x: Sequence[float], y: Sequence[float]) -> float | None:
    """Spearman's rank correlation of ``x`` and ``y`` (finite numbers, equal length): Pearson's r of their ranks, tied
    values taking the mean of their ranks (as ``scipy.stats.spearmanr``, without importing scipy.stats). None when
    either side has a single distinct value (no ranks to correlate)."""
    rx, ry = _mean_ranks(x), _mean_ranks(y)
    if len(rx) != len(ry):
        raise ValueError(f"spearman: {len(rx)} x values against {len(ry)} y values")
    mx, my = sum(rx) / len(rx), sum(ry) / len(ry)
    sxy = sum((a - mx) * (b - my) for a, b in zip(rx, ry))
    sxx, syy = sum((a - mx) ** 2 for a in rx), sum((b - my) ** 2 for b in ry)
    if sxx == 0 or syy == 0:
        return None
    return max(-1.0, min(1.0, sxy / math.sqrt(sxx * syy)))


def _mean_ranks(values: Sequence[float]) -> list[float]:
    """1-based ranks of ``values``; a run of equal values shares the mean of the ranks it spans."""
    order = sorted(range(len(values)), key=lambda i: values[i])
    ranks = [0.0] * len(values)
    start = 0
    while start < len(order):
        end = start
        while end + 1 < len(order) and values[order[end + 1]] == values[order[start]]:
            end += 1
        for i in order[start:end + 1]:
            ranks[i] = (start + end) / 2 + 1
        start = end + 1
    return ranks
