"""Read sweep runs back from MLflow, tabulate them, group seeds and finalise a sweep's parent run.

Everything here reads what the tracker wrote under the naming contract (metrics `train/loss`, `train/accuracy`,
`val/loss`, `val/accuracy` with step = global step; summary metrics `best/val_loss`, ...; tags `hydra.overrides`,
`config_hash_noseed`, `stop_reason`, `sweep_id`, `mlflow.parentRunId`). It never trains.

`finalize_sweep(client, parent_run_id, out_dir)` is what the sweep callback (and the report command) calls: it writes
`comparison.png`, `summary.csv` and `summary.md`, logs them to the parent run and tags the parent with the best child.
It works when children FAILED or logged nothing.
"""

from __future__ import annotations

import ast
import csv
import json
import logging
import math
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from mlflow.entities import Run, RunTag
from mlflow.tracking import MlflowClient

from sweeper.plots import RunHistory, plot_comparison
from sweeper.resume import LINK_TAG_PREFIX, linked_filter
from sweeper.sqlite_metrics import SqliteMetrics

log = logging.getLogger(__name__)

METRIC_KEYS = ("train/loss", "train/accuracy", "val/loss", "val/accuracy")
SEED_KEY = "trainer.seed"
PARENT_TAG = "mlflow.parentRunId"
PARENT_ROLE_TAG, PARENT_ROLE = "mlp_sweeps.role", "sweep_parent"  # set by sweeper.callbacks on the parent
# Params that are not part of a run's configuration proper (results, bookkeeping), ignored when comparing configs.
_NON_CONFIG_PARAMS = frozenset({"num_parameters"})
_SEARCH_PAGE = 1000

SUMMARY_FIELDS = (
    "num_parameters",
    "best_val_accuracy",
    "best_val_loss",
    "final_val_accuracy",
    "final_val_loss",
    "epochs",
    "stop_reason",
    "seconds",
    "status",
)
NUMERIC_FIELDS = ("num_parameters", "best_val_accuracy", "best_val_loss", "final_val_accuracy", "final_val_loss",
                  "epochs", "seconds")


# ----------------------------------------------------------------------------------------------------------- reading

def search_all_runs(client: MlflowClient, experiment_ids: Sequence[str], filter_string: str = "",
                    order_by: list[str] | None = None) -> list[Run]:
    """All runs (active lifecycle) of `experiment_ids` matching `filter_string`, following every page."""
    runs: list[Run] = []
    token = None
    while True:
        page = client.search_runs(list(experiment_ids), filter_string=filter_string, max_results=_SEARCH_PAGE,
                                  order_by=order_by or ["attributes.start_time ASC"], page_token=token)
        runs.extend(page)
        token = page.token
        if not token:
            return runs


def all_experiment_ids(client: MlflowClient) -> list[str]:
    ids: list[str] = []
    token = None
    while True:
        page = client.search_experiments(max_results=1000, page_token=token)
        ids.extend(e.experiment_id for e in page)
        token = page.token
        if not token:
            return ids


def quote_filter_value(value: str) -> str:
    """A string literal for an MLflow filter string."""
    return "'" + value.replace("'", "\\'") + "'"


def child_runs(client: MlflowClient, parent_run_id: str) -> list[Run]:
    """Children of a parent run (tag `mlflow.parentRunId`), oldest first, plus the FINISHED runs of earlier launches
    that the sweep reused instead of rerunning them (tag `mlp_sweeps.sweep.<sweep_id>`, see sweeper.resume)."""
    parent = client.get_run(parent_run_id)
    by_parent = f"tags.`{PARENT_TAG}` = {quote_filter_value(parent_run_id)}"
    runs = search_all_runs(client, [parent.info.experiment_id], by_parent)
    sweep_id = parent.data.tags.get("sweep_id")
    if sweep_id:
        own = {r.info.run_id for r in runs}
        linked = search_all_runs(client, [parent.info.experiment_id], linked_filter(sweep_id, parent_run_id))
        runs += [r for r in linked if r.info.run_id not in own]
        runs.sort(key=lambda r: r.info.start_time or 0)
    return runs


def drop_parents(runs: Sequence[Run]) -> list[Run]:
    """Remove sweep parents: runs tagged `mlp_sweeps.role=sweep_parent` or the parent of another run in `runs`
    (a sweep's parent holds no curves)."""
    parents = {r.data.tags.get(PARENT_TAG) for r in runs}
    return [r for r in runs
            if r.info.run_id not in parents and r.data.tags.get(PARENT_ROLE_TAG) != PARENT_ROLE]


def sweep_runs(client: MlflowClient, sweep_id: str) -> list[Run]:
    """The child runs tagged `sweep_id` in any experiment (the parent run itself is dropped), plus the runs the sweep
    reused from earlier launches (tag `mlp_sweeps.sweep.<sweep_id>`), oldest first."""
    by_sweep = f"tags.sweep_id = {quote_filter_value(sweep_id)}"
    experiments = all_experiment_ids(client)
    runs = search_all_runs(client, experiments, by_sweep)
    own = {r.info.run_id for r in runs}
    reused = search_all_runs(client, experiments, f"tags.`{LINK_TAG_PREFIX}{sweep_id}` LIKE '%'")
    runs += [r for r in reused if r.info.run_id not in own]
    runs.sort(key=lambda r: r.info.start_time or 0)
    return drop_parents(runs)


def _latest_by_step(metrics: Iterable[Any]) -> dict[int, float]:
    out: dict[int, float] = {}
    for m in sorted(metrics, key=lambda m: (m.step, m.timestamp)):
        out[int(m.step)] = float(m.value)
    return out


def history_from_metrics(metric_histories: dict[str, Iterable[Any]]) -> RunHistory:
    """Build a RunHistory from {metric key: [mlflow Metric, ...]} (keys as in METRIC_KEYS).

    `train/loss` becomes a dense per-step array (NaN at steps never logged); the validation metrics are aligned on the
    union of their steps (NaN where one of them is missing). A step logged twice keeps its latest value.
    """
    train = _latest_by_step(metric_histories.get("train/loss", ()))
    if train:
        length = max(train) + 1
        train_loss = np.full(length, np.nan)
        train_loss[np.fromiter(train.keys(), dtype=np.int64)] = np.fromiter(train.values(), dtype=np.float64)
    else:
        train_loss = np.zeros(0)
    per_point = {k: _latest_by_step(metric_histories.get(k, ())) for k in ("val/loss", "val/accuracy",
                                                                            "train/accuracy")}
    steps = np.array(sorted(set().union(*per_point.values())), dtype=np.int64)

    def aligned(key: str) -> np.ndarray:
        values = per_point[key]
        return np.array([values.get(int(s), np.nan) for s in steps], dtype=np.float64)

    return RunHistory(train_loss=train_loss, val_steps=steps, val_loss=aligned("val/loss"),
                      val_accuracy=aligned("val/accuracy"), train_accuracy=aligned("train/accuracy"))


def load_history(client: MlflowClient, run: Run | str) -> RunHistory:
    """The run's curves: one bulk read on MLflow's sqlite store (sweeper.sqlite_metrics), else one
    `get_metric_history` per curve metric (the client follows pagination itself). Skips metrics the run never logged,
    so a FAILED run without metrics gives an empty history."""
    if isinstance(run, str):
        run = client.get_run(run)
    keys = [k for k in METRIC_KEYS if k in run.data.metrics]
    bulk = SqliteMetrics.for_client(client)
    if bulk is not None:
        try:
            return history_from_metrics(bulk.history(run.info.run_id, keys))
        except Exception as exc:  # an MLflow whose tables differ: its own reader gives the same points
            log.debug("bulk metric read failed (%s); using get_metric_history", exc)
    return history_from_metrics({k: client.get_metric_history(run.info.run_id, k) for k in keys})


# ----------------------------------------------------------------------------------------------- run interpretation

def _split_top_level(text: str) -> list[str]:
    """Split on commas/whitespace that are not inside brackets or quotes."""
    parts, depth, quote, current = [], 0, None, []
    for ch in text:
        if quote:
            current.append(ch)
            if ch == quote:
                quote = None
            continue
        if ch in "'\"":
            quote = ch
        elif ch in "[({":
            depth += 1
        elif ch in "])}":
            depth -= 1
        elif depth == 0 and (ch == "," or ch.isspace()):
            if current:
                parts.append("".join(current))
            current = []
            continue
        current.append(ch)
    if current:
        parts.append("".join(current))
    return parts


def parse_overrides(text: str | None) -> dict[str, str]:
    """The `hydra.overrides` tag as {key: value}, in order.

    Accepts a JSON or Python list of override strings (`["experiment=task3c", "model.hidden_sizes=[128]"]`) or a
    plain string separated by spaces or top-level commas. `+key=v` / `++key=v` lose their prefix; `~key` is dropped.
    """
    if not text or not text.strip():
        return {}
    text = text.strip()
    items: list[str] | None = None
    if text.startswith("["):
        for parse in (json.loads, ast.literal_eval):
            try:
                value = parse(text)
            except (ValueError, SyntaxError):
                continue
            if isinstance(value, list) and all(isinstance(v, str) for v in value):
                items = value
                break
    if items is None:
        items = _split_top_level(text)
    out: dict[str, str] = {}
    for item in items:
        item = item.strip()
        if "=" not in item or item.startswith("~"):
            continue
        key, value = item.split("=", 1)
        out[key.lstrip("+").strip()] = value.strip()
    return out


def preset_name(run: Run) -> str | None:
    """The experiment preset of a run: tag `experiment_preset` or `experiment`, else param `name` (the top-level
    config key the presets set), ignoring the config default "default"."""
    tags, params = run.data.tags, run.data.params
    for value in (tags.get("experiment_preset"), tags.get("experiment"), params.get("name")):
        if value and value not in ("default", "None", "null"):
            return value
    return None


def run_name(run: Run) -> str:
    return run.info.run_name or run.data.tags.get("mlflow.runName") or run.info.run_id[:8]


def config_group_key(run: Run) -> str:
    """Runs with equal keys differ only in their seed: tag `config_hash_noseed`, else the params minus the seed."""
    tagged = run.data.tags.get("config_hash_noseed")
    if tagged:
        return tagged
    params = {k: v for k, v in run.data.params.items() if k != SEED_KEY and k not in _NON_CONFIG_PARAMS}
    if not params:
        return "run:" + run.info.run_id  # nothing to compare: a group of its own
    return "params:" + json.dumps(params, sort_keys=True)


def swept_keys(runs: Sequence[Run]) -> list[str]:
    """Override keys whose value differs between runs (all override keys of a single run), in first-seen order."""
    overrides = [parse_overrides(r.data.tags.get("hydra.overrides")) for r in runs]
    order: list[str] = []
    for o in overrides:
        order.extend(k for k in o if k not in order)
    if len(runs) <= 1:
        return order
    return [k for k in order if len({o.get(k) for o in overrides}) > 1]


def _metric(run: Run, key: str) -> float | None:
    value = run.data.metrics.get(key)
    return float(value) if value is not None else None


def _finite_or_none(value: float | None) -> float | None:
    return value if value is not None and math.isfinite(value) else None


def summary_row(run: Run, keys: Sequence[str], history: RunHistory | None = None) -> dict[str, Any]:
    """One table row; summary metrics come from the run, and fall back to its curves (a killed run has curves but
    no summary metrics)."""
    overrides = parse_overrides(run.data.tags.get("hydra.overrides"))
    row: dict[str, Any] = {"run_name": run_name(run)}
    for k in keys:
        row[k] = overrides.get(k, "")
    num_params = _metric(run, "num_parameters")
    if num_params is None and run.data.params.get("num_parameters"):
        try:
            num_params = float(run.data.params["num_parameters"])
        except ValueError:
            num_params = None
    row["num_parameters"] = int(num_params) if num_params is not None else None
    row["best_val_accuracy"] = _metric(run, "best/val_accuracy")
    row["best_val_loss"] = _metric(run, "best/val_loss")
    row["final_val_accuracy"] = _metric(run, "final/val_accuracy")
    row["final_val_loss"] = _metric(run, "final/val_loss")
    if history is not None and history.val_steps.size:
        vl, va = history.val_loss, history.val_accuracy
        if row["best_val_loss"] is None and np.isfinite(vl).any():
            row["best_val_loss"] = float(np.nanmin(np.where(np.isfinite(vl), vl, np.nan)))
        if row["best_val_accuracy"] is None and np.isfinite(va).any():
            row["best_val_accuracy"] = float(np.nanmax(np.where(np.isfinite(va), va, np.nan)))
        if row["final_val_loss"] is None:
            row["final_val_loss"] = float(vl[-1])
        if row["final_val_accuracy"] is None:
            row["final_val_accuracy"] = float(va[-1])
    epochs = _metric(run, "epochs")
    row["epochs"] = int(epochs) if epochs is not None else None
    row["stop_reason"] = run.data.tags.get("stop_reason", "")
    seconds = _metric(run, "train_seconds")
    if seconds is None and run.info.end_time and run.info.start_time:
        seconds = (run.info.end_time - run.info.start_time) / 1000.0
    row["seconds"] = seconds
    row["status"] = run.info.status
    row["run_id"] = run.info.run_id
    row["group"] = config_group_key(run)
    return row


def summary_rows(runs: Sequence[Run], histories: dict[str, RunHistory] | None = None) -> tuple[list[str],
                                                                                              list[dict[str, Any]]]:
    """(swept keys, one row per run). Row keys: run_name, each swept key, SUMMARY_FIELDS, run_id, group."""
    keys = swept_keys(runs)
    histories = histories or {}
    return keys, [summary_row(r, keys, histories.get(r.info.run_id)) for r in runs]


def best_row(rows: Sequence[dict[str, Any]]) -> dict[str, Any] | None:
    """The FINISHED row with the lowest finite best_val_loss (None if there is none)."""
    candidates = [r for r in rows if r["status"] == "FINISHED" and _finite_or_none(r["best_val_loss"]) is not None]
    return min(candidates, key=lambda r: r["best_val_loss"]) if candidates else None


def row_label(row: dict[str, Any], keys: Sequence[str], drop_seed: bool = True) -> str:
    """Legend label: the swept values (`model.hidden_sizes=[128]` shown as `hidden_sizes=[128]`), else the run name."""
    parts = [f"{k.split('.')[-1]}={row[k]}" for k in keys
             if row.get(k, "") != "" and not (drop_seed and k == SEED_KEY)]
    return " ".join(parts) if parts else row["run_name"]


@dataclass
class Group:
    """Runs sharing a configuration except the seed."""

    key: str
    label: str
    rows: list[dict[str, Any]] = field(default_factory=list)


def group_rows(rows: Sequence[dict[str, Any]], keys: Sequence[str]) -> list[Group]:
    """Group rows by their config key (seed excluded), in first-seen order; label from the first row."""
    groups: dict[str, Group] = {}
    for row in rows:
        group = groups.get(row["group"])
        if group is None:
            group = groups[row["group"]] = Group(row["group"], row_label(row, keys))
        group.rows.append(row)
    labels = [g.label for g in groups.values()]
    for g in groups.values():  # two configs that only differ in a non-swept key would share a label
        if labels.count(g.label) > 1:
            g.label = f"{g.label} ({g.rows[0]['run_name']})"
    return list(groups.values())


def mean_std(values: Iterable[Any]) -> tuple[float | None, float | None, int]:
    """(mean, sample std (ddof=1, 0 for one value), n) over the finite values; (None, None, 0) if there are none."""
    finite = [float(v) for v in values if v is not None and math.isfinite(float(v))]
    if not finite:
        return None, None, 0
    arr = np.asarray(finite)
    return float(arr.mean()), float(arr.std(ddof=1)) if arr.size > 1 else 0.0, arr.size


# ---------------------------------------------------------------------------------------------------------- writing

def _fmt(value: Any, key: str = "") -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        if not math.isfinite(value):
            return str(value)
        if key == "seconds":
            return f"{value:.1f}"
        return f"{value:.4f}"
    return str(value)


def write_summary_csv(rows: Sequence[dict[str, Any]], keys: Sequence[str], path: str | Path) -> Path:
    """summary.csv: full precision numbers, empty cells for missing values."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    columns = ["run_name", *keys, *SUMMARY_FIELDS, "run_id", "group"]
    with path.open("w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=columns, extrasaction="ignore")
        writer.writeheader()
        for row in rows:
            writer.writerow({c: ("" if row.get(c) is None else row.get(c)) for c in columns})
    return path


def _md_cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def markdown_table(header: Sequence[str], body: Sequence[Sequence[str]]) -> str:
    lines = ["| " + " | ".join(_md_cell(h) for h in header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(_md_cell(c) for c in row) + " |" for row in body]
    return "\n".join(lines) + "\n"


def summary_markdown(rows: Sequence[dict[str, Any]], keys: Sequence[str], groups: Sequence[Group] | None = None,
                     title: str | None = None, best: dict[str, Any] | None = None) -> str:
    """The per-run table; when some config ran with several seeds, a mean ± std table over seeds as well."""
    columns = ["run_name", *keys, *SUMMARY_FIELDS]
    text = f"# {title}\n\n" if title else ""
    if best is not None:
        text += (f"Best run (lowest best validation loss among FINISHED runs): **{best['run_name']}** "
                 f"(best val loss {_fmt(best['best_val_loss'])}, best val accuracy "
                 f"{_fmt(best['best_val_accuracy'])}).\n\n")
    text += markdown_table(columns, [[_fmt(r.get(c), c) for c in columns] for r in rows])
    if groups and any(len(g.rows) > 1 for g in groups):
        stats = ("best_val_accuracy", "best_val_loss", "final_val_accuracy", "final_val_loss", "epochs", "seconds")
        body = []
        for g in groups:
            cells = [g.label, str(len(g.rows))]
            for s in stats:
                mean, std, n = mean_std(r[s] for r in g.rows)
                cells.append("" if mean is None else f"{_fmt(float(mean), s)} ± {_fmt(float(std), s)}"
                             + ("" if n == len(g.rows) else f" (n={n})"))
            body.append(cells)
        text += "\n## Mean ± std over seeds\n\n" + markdown_table(["config", "runs", *stats], body)
    return text


@dataclass
class SweepSummary:
    """What `finalize_sweep` produced."""

    rows: list[dict[str, Any]]
    keys: list[str]
    groups: list[Group]
    best: dict[str, Any] | None
    files: dict[str, Path]


def write_sweep_outputs(runs: Sequence[Run], histories: dict[str, RunHistory], out_dir: str | Path,
                        title: str | None = None, prefix: str = "") -> SweepSummary:
    """comparison.png, summary.csv and summary.md for `runs` into `out_dir` (no MLflow writes)."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    keys, rows = summary_rows(runs, histories)
    groups = group_rows(rows, keys)
    best = best_row(rows)
    plotted = {g.label: [histories[r["run_id"]] for r in g.rows
                         if r["run_id"] in histories and not histories[r["run_id"]].is_empty] for g in groups}
    plotted = {label: hs for label, hs in plotted.items() if hs}
    files = {
        "comparison.png": plot_comparison(plotted, out_dir / f"{prefix}comparison.png", title=title),
        "summary.csv": write_summary_csv(rows, keys, out_dir / f"{prefix}summary.csv"),
    }
    md = out_dir / f"{prefix}summary.md"
    md.write_text(summary_markdown(rows, keys, groups, title=title, best=best))
    files["summary.md"] = md
    return SweepSummary(rows=rows, keys=keys, groups=groups, best=best, files=files)


def finalize_sweep(client: MlflowClient, parent_run_id: str, out_dir: str | Path) -> SweepSummary:
    """Summarise a sweep's children and attach the result to its parent run.

    Writes comparison.png, summary.csv and summary.md into `out_dir`, logs them as artifacts of the parent, and tags
    the parent with the best child (`best_child_run_id`, `best_child_name`, `best/val_loss`, `best/val_accuracy`) when
    a FINISHED child has a finite best validation loss. Children that FAILED or logged no metrics still get a row.
    """
    parent = client.get_run(parent_run_id)
    runs = child_runs(client, parent_run_id)
    histories = {r.info.run_id: load_history(client, r) for r in runs}
    title = f"sweep {run_name(parent)}"
    result = write_sweep_outputs(runs, histories, out_dir, title=title)
    for path in result.files.values():
        client.log_artifact(parent_run_id, str(path))
    reused = sum(r.data.tags.get(PARENT_TAG) != parent_run_id for r in runs)
    tags = [RunTag("sweep_children", str(len(runs))), RunTag("sweep_children_reused", str(reused)),
            RunTag("sweep_children_finished", str(sum(r["status"] == "FINISHED" for r in result.rows)))]
    if result.best is not None:
        best = result.best
        tags += [RunTag("best_child_run_id", best["run_id"]), RunTag("best_child_name", best["run_name"]),
                 RunTag("best/val_loss", repr(best["best_val_loss"]))]
        if best["best_val_accuracy"] is not None:
            tags.append(RunTag("best/val_accuracy", repr(best["best_val_accuracy"])))
    client.log_batch(parent_run_id, tags=tags)
    log.info("finalised sweep %s: %d children, best %s", parent_run_id, len(runs),
             result.best["run_name"] if result.best else "none")
    return result


_SAFE = re.compile(r"[^A-Za-z0-9._=-]+")


def safe_filename(text: str, max_len: int = 80) -> str:
    return _SAFE.sub("_", text).strip("_")[:max_len] or "run"
