"""A sweep's summary: comparison.png, summary.csv and summary.md, attached to its parent run with the best child.

`finalize_sweep(client, parent_run_id, out_dir)` is what the sweep callback calls at the end of a sweep (and the
report command with --attach). It covers the runs `select_runs(parent_run_id=...)` selects, so the summary and a later
report of the same sweep list the same runs. It works when children FAILED or logged nothing.
"""
from __future__ import annotations

import logging
import math
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sweeper import names

from .colours import config_colours
from .history import RunHistory, load_history
from .importance import Importance, importance, importance_markdown, plot_importance
from .plots import plot_comparison, save_figure
from .selection import select_runs
from .tables import (METRIC_FIELDS, Group, SummaryRow, best_row, group_rows, run_name, summary_markdown,
                     summary_rows, write_summary_csv)
from .verdict import Objective, SeedVerdict, confirmation_markdown, judge, verdict_markdown

if TYPE_CHECKING:
    from mlflow.entities import Run

log = logging.getLogger(__name__)


@dataclass
class SweepSummary:
    """What `write_sweep_outputs` and `finalize_sweep` produced."""

    rows: list[SummaryRow]
    keys: list[str]
    groups: list[Group]
    best: SummaryRow | None
    files: dict[str, Path]
    reused: set[str] = field(default_factory=set)  # run ids of earlier launches that this sweep reused
    verdict: SeedVerdict | None = None  # the configs over seeds, and the best against the runner-up
    importance: Importance | None = None  # which swept setting matters (None: fewer than 2 configs, or none varies)
    confirmation: Mapping | None = None  # the confirm sweeper's outcome (None for other sweepers)


def figure_title(title: str | None, keys: Sequence[str], groups: Sequence[Group]) -> str | None:
    """`title` plus what varies between the curves (the swept keys but the seed) and whether seeds were averaged."""
    varies = [k.split(".")[-1] for k in keys if k != names.SEED_PARAM]
    notes = [f"varies: {', '.join(varies)}"] if varies else []
    if any(len(g.per_seed) > 1 for g in groups):
        notes.append("seeds of one config averaged")
    if not notes:
        return title
    return f"{title} ({'; '.join(notes)})" if title else "; ".join(notes)


def write_sweep_outputs(runs: Sequence[Run], histories: dict[str, RunHistory], out_dir: str | Path,
                        title: str | None = None, order: tuple[str, bool] | None = None,
                        job_numbers: Mapping[str, int] | None = None,
                        objective: Objective | None = None, confirmation: Mapping | None = None,
                        study_figures: bool = False) -> SweepSummary:
    """comparison.png (seeds of one config as mean ± std), summary.csv and summary.md for `runs` into `out_dir`
    (no MLflow writes). `order` = (row field, descending) sorts the rows, missing values last; else start order.
    Seeds of one config are averaged over one run per seed (`Group.per_seed`). summary.md ends with the configs'
    `objective` over seeds and the verdict on the best against the runner-up (`reporting.verdict`), then the confirm
    sweeper's looks (`confirmation`, its outcome: `sweeper.sweep.confirm`). With 3 or more configs, how the objective
    depends on the swept values: parallel_coordinates.png (2 or more swept keys) or slice.png (one), drawn as a
    search's study figures are, one line or point per config; a search (`study_figures`) has its study's own."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    keys, rows = summary_rows(runs, histories)
    for row in rows:  # a run reused from an earlier launch takes its place in this launch's grid (`job_numbers`)
        row.job = (job_numbers or {}).get(row.run_id, row.job)
    if order is not None:
        field, descending = order
        valued = [r for r in rows if isinstance(getattr(r, field), (int, float)) and not math.isnan(getattr(r, field))]
        rest = [r for r in rows if not any(r is v for v in valued)]
        rows = sorted(valued, key=lambda r: getattr(r, field), reverse=descending) + rest
    groups = group_rows(rows, keys)
    best = best_row(rows)
    plotted = {g.label: [histories[r.run_id] for r in g.per_seed
                         if r.run_id in histories and not histories[r.run_id].is_empty] for g in groups}
    plotted = {label: hs for label, hs in plotted.items() if hs}
    palette = config_colours([g.key for g in groups])  # by config (config_hash_noseed), in the sweep's order
    files = {
        "comparison.png": plot_comparison(plotted, out_dir / "comparison.png", title=figure_title(title, keys, groups),
                                          colors={g.label: palette[g.key] for g in groups}),
        "summary.csv": write_summary_csv(rows, keys, out_dir / "summary.csv"),
    }
    objective = objective or Objective()
    judged = judge(groups, objective)
    found = importance(groups, keys, judged, seed_key=names.SEED_PARAM)
    text = summary_markdown(rows, keys, groups, title=title, best=best) + "\n" + verdict_markdown(judged)
    if confirmation is not None:
        text += "\n" + confirmation_markdown(confirmation)
    if found is not None:
        text += "\n" + importance_markdown(found, objective)
        if found.fanova:
            files["importance.png"] = plot_importance(found, out_dir / "importance.png", title)
        if not study_figures and found.n_configs >= 3:
            name, figure = config_figure(found, objective, title)
            files[name] = save_figure(figure, out_dir / name)
    md = out_dir / "summary.md"
    md.write_text(text)
    files["summary.md"] = md
    return SweepSummary(rows=rows, keys=keys, groups=groups, best=best, files=files, verdict=judged,
                        importance=found, confirmation=confirmation)


def config_figure(found: Importance, objective: Objective, title: str | None) -> tuple[str, Any]:
    """(file name, figure): the configs as a study's trials, parallel coordinates or, for one swept key, a slice."""
    from .study_plots import parallel_figure, slice_figure

    heading = f"{title or 'sweep'}: {found.n_configs} configs, each at its mean over seeds"
    if len(found.params) >= 2:
        return names.PARALLEL_COORDINATES, parallel_figure(found.study, objective.metric, heading, order=found.params)
    return names.SLICE_PLOT, slice_figure(found.study, objective.metric, heading)


def sweep_title(parent_name: str) -> str:
    """`sweep task3_tricks`; an ad-hoc sweep's parent is already named `sweep <overrides>`."""
    return parent_name if parent_name == "sweep" or parent_name.startswith("sweep ") else f"sweep {parent_name}"


def finalize_sweep(client: Any, parent_run_id: str, out_dir: str | Path,
                   job_numbers: Mapping[str, int] | None = None, confirmation: Mapping | None = None) -> SweepSummary:
    """Summarise a sweep's runs and attach the result to its parent run.

    Writes comparison.png, summary.csv and summary.md into `out_dir`, logs them as artifacts of the parent, and tags
    the parent with the number of runs (`names.SWEEP_CHILDREN`, of which `names.SWEEP_CHILDREN_REUSED` reused from
    earlier launches and `names.SWEEP_CHILDREN_FINISHED` FINISHED) and, when a FINISHED run has a finite best
    validation loss, with the best one (`names.BEST_CHILD_RUN_ID`, `names.BEST_CHILD_NAME`, `names.BEST_VAL_LOSS`,
    `names.BEST_VAL_ACCURACY`), and with the verdict on the best config against the runner-up (`names.SWEEP_VERDICT`);
    each swept parameter's fANOVA importance is a metric of the parent (`names.IMPORTANCE_PREFIX` + its key).
    Runs that FAILED or logged no metrics still get a row.
    """
    from mlflow.entities import Metric, RunTag

    parent = client.get_run(parent_run_id)
    runs, _ = select_runs(client, parent_run_id=parent_run_id)
    histories = {r.info.run_id: load_history(client, r) for r in runs}
    result = write_sweep_outputs(runs, histories, out_dir, title=sweep_title(run_name(parent)),
                                  order=_order(parent), job_numbers=job_numbers,
                                  objective=Objective.of_parent(parent.data.tags), confirmation=confirmation,
                                  study_figures=names.STUDY_NAME in parent.data.tags)
    for path in result.files.values():
        client.log_artifact(parent_run_id, str(path))
    result.reused = {r.info.run_id for r in runs if r.data.tags.get(names.PARENT_RUN_ID) != parent_run_id}
    tags = [RunTag(names.SWEEP_CHILDREN, str(len(runs))), RunTag(names.SWEEP_CHILDREN_REUSED, str(len(result.reused))),
            RunTag(names.SWEEP_CHILDREN_FINISHED, str(sum(r.status == "FINISHED" for r in result.rows)))]
    tags.append(RunTag(names.SWEEP_VERDICT, result.verdict.sentence))
    if confirmation is not None:
        tags.append(RunTag(names.CONFIRM_VERDICT, confirmation["sentence"]))
    best = result.best
    if best is not None:
        tags += [RunTag(names.BEST_CHILD_RUN_ID, best.run_id), RunTag(names.BEST_CHILD_NAME, best.run_name),
                 RunTag(names.BEST_VAL_LOSS, repr(best.best_val_loss))]
        if best.best_val_accuracy is not None:
            tags.append(RunTag(names.BEST_VAL_ACCURACY, repr(best.best_val_accuracy)))
    metrics = []
    if result.importance is not None:
        now = int(time.time() * 1000)
        metrics = [Metric(names.IMPORTANCE_PREFIX + key, value, now, 0)
                   for key, value in result.importance.fanova.items()]
    client.log_batch(parent_run_id, metrics=metrics, tags=tags)
    colour_runs(client, result.groups)
    log.debug("finalised sweep %s: %d runs, best %s", parent_run_id, len(runs), best.run_name if best else "none")
    return result


def colour_runs(client: Any, groups: Sequence[Group]) -> None:
    """Tag every run with its configuration's colour in comparison.png (``mlflow.runColor``), for the MLflow UI."""
    from mlflow.entities import RunTag

    palette = config_colours([g.key for g in groups])  # the mapping write_sweep_outputs drew with
    for g in groups:
        for r in g.rows:
            client.log_batch(r.run_id, tags=[RunTag(names.RUN_COLOR, palette[g.key])])


def _order(parent: Any) -> tuple[str, bool]:
    """A search's summary is sorted by its objective (best first); a grid's by Hydra's job number, the grid's own
    order (a run reused from an earlier launch by the number of the job that reused it; runs without one last)."""
    objective = parent.data.tags.get(names.SEARCH_OBJECTIVE)
    if objective is None:
        return "job", False
    field = METRIC_FIELDS.get(objective, METRIC_FIELDS[names.OBJECTIVE])
    return field, parent.data.tags.get(names.SEARCH_DIRECTION) == "maximize"
