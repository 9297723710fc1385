"""Is the best config really better? (sweeper/reporting/verdict.py): constructed sweeps, then a real multirun."""
from __future__ import annotations

import math

import pytest

from sweeper import names
from sweeper.reporting.tables import Group, SummaryRow
from sweeper.reporting.verdict import Objective, judge, verdict_markdown

from ..sweeper_helpers import run_cli, runs_of, sqlite_uri


def group(label: str, losses: dict, status: str = "FINISHED") -> Group:
    """A config whose seed s ended with best validation loss losses[s] (and accuracy 1 - loss)."""
    rows = [SummaryRow(run_name=f"{label} seed={s}", run_id=f"{label}-{s}", status=status, group=label,
                       best_val_loss=v, best_val_accuracy=1 - v, seed=str(s)) for s, v in losses.items()]
    return Group(label, label, rows)


def test_a_clear_difference_ranks_the_better_config_first_and_says_by_how_much():
    worse = group("width=64", {0: 0.30, 1: 0.32, 2: 0.31, 3: 0.35})
    better = group("width=128", {0: 0.20, 1: 0.225, 2: 0.21, 3: 0.24})  # 0.1 lower on every seed, +-0.005
    result = judge([worse, better], Objective())
    assert [g.label for g, _ in result.ranked] == ["width=128", "width=64"]
    c = result.comparison
    assert c.n == 4 and c.separated and c.low < 0.1 < c.high and c.difference == pytest.approx(0.10125)
    assert result.sentence.startswith("width=128 beats width=64 by 0.1 val loss (95 % CI 0.09")
    by_accuracy = judge([worse, better], Objective(names.BEST_VAL_ACCURACY, maximize=True))
    assert by_accuracy.sentence.startswith("width=128 beats width=64 by 10 pp val accuracy")


def test_overlapping_seeds_are_not_distinguishable_and_one_seed_allows_no_claim():
    a = group("lr=0.1", {0: 0.30, 1: 0.25, 2: 0.33})
    b = group("lr=0.2", {0: 0.27, 1: 0.31, 2: 0.29})  # mean 0.29 against 0.2933, per seed -0.03, +0.06, -0.04
    result = judge([a, b], Objective())
    assert not result.comparison.separated
    assert result.sentence.startswith("lr=0.2 and lr=0.1 are not distinguishable with 3 seeds")
    one = judge([group("lr=0.1", {0: 0.3}), group("lr=0.2", {0: 0.2})], Objective())
    assert "share one seed: no statement about seed noise can be made" in one.sentence


def test_unfinished_and_non_finite_runs_do_not_count():
    a = group("a", {0: 0.2, 1: 0.21})
    diverged = group("b", {0: float("nan"), 1: 0.1})
    killed = group("c", {0: 0.01, 1: 0.01}, status="KILLED")
    result = judge([a, diverged, killed], Objective())
    estimates = {g.label: est for g, est in result.ranked}
    assert (estimates["b"].n, estimates["b"].mean) == (1, 0.1) and estimates["c"].n == 0
    assert [g.label for g, _ in result.ranked] == ["b", "a", "c"]  # c has no finished value: last
    assert "share one seed" in result.sentence  # b and a share seed 1 only
    text = verdict_markdown(result)
    assert "| c | 0 | - | - |" in text and "Verdict: " in text
    assert math.isnan(diverged.rows[0].best_val_loss)


@pytest.mark.slow
@pytest.mark.integration
def test_the_readme_sweep_prints_and_tags_its_verdict(tmp_path):
    """README's example ("Is the best config really better?"), as written: two learning rates far apart, three seeds
    each; the end-of-sweep lines, summary.md and the parent run carry the same sentence."""
    proc = run_cli(["-m", "data=digits", "trainer.epochs=1", "optimizer.lr=0.0001,0.1", "trainer.seed=0,1,2"],
                   tmp_path)
    assert proc.returncode == 0, proc.stderr[-2000:]
    (line,) = [l for l in proc.stdout.splitlines() if l.startswith("verdict: ")]
    sentence = line[len("verdict: "):]
    assert sentence.startswith("lr=0.1 beats lr=0.0001 by ") and "3 seeds" in sentence, sentence
    _, runs = runs_of(sqlite_uri(tmp_path / "outputs" / "mlflow.db"))
    (parent,) = [r for r in runs if names.SWEEP_CHILDREN in r.data.tags]
    assert parent.data.tags[names.SWEEP_VERDICT] == sentence
    summary = next((tmp_path / "outputs" / "multiruns").rglob("summary.md")).read_text()
    assert f"Verdict: {sentence}" in summary and "| lr=0.1 | 3 |" in summary
