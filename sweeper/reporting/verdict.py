"""Is the best config really better? The sweep's configs ranked by their objective over seeds (n, mean, 95 % CI),
and the best against the runner-up, paired over their shared seeds, in one plain sentence (``reporting/stats.py``
says which test and why).

A config is a `tables.Group` (runs that differ only in the seed), counted over its distinct seeds
(`Group.per_seed`); only FINISHED runs with a finite objective count. The objective is a search's own (its parent's
`optuna.objective` and `optuna.direction` tags), else `names.OBJECTIVE` (best validation loss, lower is better).
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from sweeper import names

from .labels import format_metric
from .stats import Comparison, Estimate, is_finite, mean_interval, paired_comparison, verdict
from .tables import METRIC_FIELDS, Group, markdown_table


@dataclass(frozen=True)
class Objective:
    """The metric the sweep is judged by and its direction."""

    metric: str = names.OBJECTIVE
    maximize: bool = False

    @classmethod
    def of_parent(cls, tags: Mapping[str, str]) -> Objective:
        """A search's objective from its parent's tags; a grid's is `names.OBJECTIVE`, minimized."""
        metric = tags.get(names.SEARCH_OBJECTIVE)
        if metric not in METRIC_FIELDS:
            return cls()
        return cls(metric, tags.get(names.SEARCH_DIRECTION) == "maximize")


@dataclass
class SeedVerdict:
    """Configs ranked best first by their mean objective over seeds (configs without a finite value last), and the
    sentence on the best against the runner-up."""

    objective: Objective
    ranked: list[tuple[Group, Estimate]] = field(default_factory=list)
    comparison: Comparison | None = None
    sentence: str = ""


def seed_values(group: Group, objective: Objective) -> dict[Any, float]:
    """{seed: objective} over the group's FINISHED runs, one per distinct seed, finite values only."""
    key = METRIC_FIELDS[objective.metric]
    values = {}
    for row in group.per_seed:
        value = getattr(row, key)
        if row.status == "FINISHED" and is_finite(value):
            values[row.seed if row.seed is not None else row.run_id] = float(value)
    return values


def judge(groups: Sequence[Group], objective: Objective) -> SeedVerdict:
    """Rank `groups` and compare the first two (see the module docstring)."""
    scored = [(g, seed_values(g, objective)) for g in groups]
    estimates = [(g, values, mean_interval(list(values.values()))) for g, values in scored]
    valued = [e for e in estimates if e[2].mean is not None]
    valued.sort(key=lambda e: e[2].mean, reverse=objective.maximize)
    rest = [e for e in estimates if e[2].mean is None]
    result = SeedVerdict(objective, [(g, est) for g, _, est in valued + rest])
    if len(valued) < 2:
        result.sentence = ("one config with a finished run: there is nothing to compare it with." if valued else
                           "no config has a finished run with a finite objective: nothing to compare.")
        return result
    (best, best_values, _), (second, second_values, _) = valued[0], valued[1]
    result.comparison = paired_comparison(best_values, second_values, objective.maximize)
    result.sentence = verdict(best.label, second.label, result.comparison, objective.metric)
    return result


def _interval_cell(est: Estimate) -> str:
    if est.low is None:
        return "-"
    return f"{format_metric(est.low)} to {format_metric(est.high)}"


def verdict_markdown(result: SeedVerdict, level: int | None = 2) -> str:
    """A heading of `level` (None: a bold line, for a report's sections), the configs' objective over seeds (n, mean,
    95 % CI) best first, and the sentence."""
    goal = "higher" if result.objective.maximize else "lower"
    body = [[g.label, str(est.n), format_metric(est.mean) if est.mean is not None else "-", _interval_cell(est)]
            for g, est in result.ranked]
    question = "Is the best config really better?"
    return ((f"{'#' * level} {question}" if level else f"**{question}**") + "\n\n"
            f"Objective: `{result.objective.metric}` ({goal} is better), over each config's distinct seeds "
            f"(FINISHED runs); 95 % CI: Student t.\n\n"
            + markdown_table(["config", "n seeds", "mean", "95 % CI"], body)
            + f"\nVerdict: {result.sentence}\n")


def confirmation_markdown(result: Mapping[str, Any], level: int = 2) -> str:
    """The confirm sweeper's outcome (``sweeper.sweep.confirm``): its plan, each look's best against the other top
    configs over the added seeds (p against the corrected alpha), and its sentence."""
    goal = "higher" if result["maximize"] else "lower"
    schedule = ", ".join(map(str, result["schedule"])) or "none"
    text = (f"{'#' * level} Confirmed with more seeds? (hydra/sweeper=confirm)\n\n"
            f"Objective: `{result['settings']['objective']}` ({goal} is better). The grid's seeds chose the top "
            f"{len(result['top'])} of {result['configs']} configs; each then got the same added seeds, looked at "
            f"after {schedule} of them. Each comparison (the best over the added seeds against another top config, "
            f"paired t-test) is judged at alpha = {result['alpha']:.3g}: 1 - confidence "
            f"({result['settings']['confidence']:g}) over every look and pair (Bonferroni), so all its statements "
            f"hold together at that confidence.\n\n")
    body = []
    for number, found in enumerate(result["looks"], 1):
        for other, c in found["comparisons"].items():
            body.append([str(number), str(found["seeds"]), found["best"] or "-", other,
                         format_metric(c["difference"]) if c["difference"] is not None else "-",
                         "-" if c["p_value"] is None else f"{c['p_value']:.3g}", "yes" if c["separated"] else "no"])
    if body:
        text += markdown_table(["look", "added seeds", "best", "against", "difference", "p", "separated"], body)
    return text + f"\nConfirm: {result['sentence']}\n"
