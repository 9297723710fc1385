"""The report directory of a selection of runs: the sweep summary, each run's curves and the course's figures.

Written into the output directory: `comparison.png` (every selected run, seeds grouped into mean ± std),
`summary.csv`, `summary.md`, `report.md` (the table plus links to every figure), `curves/<run>.png` (the two-panel
figure of each run), and the course's figures whose runs exist: `task2c_curves.png`, `task3_tricks.png`
(2c → 3a → 3b → 3c), `task4_width.png` (3c / 4a / 4b) and `task4_depth.png` (3c / 4d / 4e / 4f). A course comparison
is drawn when at least two of its presets have runs. Runs are grouped by `config_hash_noseed` everywhere: the seeds
of one config become a mean ± std band, and runs of one preset with other settings are curves of their own.
`report.md` holds the figures, then (with `by_sweep`) one table section per sweep in the order they ran.
"""
from __future__ import annotations

import time
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sweeper import names

from .finalize import sweep_title, write_sweep_outputs
from .importance import importance, importance_markdown
from .verdict import Objective, judge, verdict_markdown
from .history import RunHistory, load_history
from .labels import distinct_labels
from .plots import plot_comparison, plot_curves
from .tables import (
    best_row,
    config_group_key,
    group_rows,
    one_per_seed,
    preset_name,
    run_name,
    safe_filename,
    summary_markdown,
    summary_row,
    summary_rows,
    without_seed,
)

if TYPE_CHECKING:
    from mlflow.entities import Run

# The course's comparisons: output file stem, title, [(preset, legend label), ...] in drawing order.
COURSE_FIGURES: tuple[tuple[str, str, tuple[tuple[str, str], ...]], ...] = (
    ("task3_tricks", "Task 3: tricks added one at a time", (
        ("task2c", "task2c baseline"),
        ("task3a", "task3a + improved init"),
        ("task3b", "task3b + improved sigmoid"),
        ("task3c", "task3c + momentum"),
    )),
    ("task4_width", "Task 4: hidden layer width", (
        ("task4a", "task4a"),
        ("task3c", "task3c"),
        ("task4b", "task4b"),
    )),
    ("task4_depth", "Task 4: depth", (
        ("task3c", "task3c"),
        ("task4d", "task4d"),
        ("task4e", "task4e"),
        ("task4f", "task4f"),
    )),
)
BASELINE_PRESET = "task2c"


def _hidden_label(run: Run) -> str:
    """`[64]`, `[32, 64]` or `3×64` from the run's hidden sizes (else its width and depth), "" when unknown."""
    p = run.data.params
    sizes = p.get(names.EFFECTIVE_HIDDEN_SIZES_PARAM) or p.get("model.hidden_sizes")
    if sizes and sizes not in ("None", "null", ""):
        items = [s.strip() for s in sizes.strip("[]()").split(",") if s.strip()]
        if len(items) > 2 and len(set(items)) == 1:
            return f"{len(items)}×{items[0]}"
        return "[" + ", ".join(items) + "]"
    width, depth = p.get("model.width"), p.get("model.depth")
    if width and depth:
        return f"{depth}×{width}" if depth != "1" else f"[{width}]"
    return ""


def _course_label(run: Run, base: str, figure: str) -> str:
    if figure == "task3_tricks":
        return base
    parts = [base]
    hidden = _hidden_label(run)
    if hidden:
        parts.append(f"hidden {hidden}")
    activation = run.data.params.get("model.activation")
    if figure == "task4_depth" and activation:
        parts.append(activation)
    return ", ".join(parts)


def _settings(run: Run) -> dict[str, str]:
    """The run's params that are settings: not its seed and not its parameter count (which follows from the rest)."""
    return {k: v for k, v in run.data.params.items() if k not in (names.SEED_PARAM, names.NUM_PARAMETERS)}


def _by_config(runs: Sequence[Run]) -> list[list[Run]]:
    """`runs` grouped by config_hash_noseed (the seeds of one config together), in first-seen order."""
    configs: dict[str, list[Run]] = {}
    for run in runs:
        configs.setdefault(config_group_key(run), []).append(run)
    return list(configs.values())


def _course_figures(runs: Sequence[Run], histories: dict[str, RunHistory], out_dir: Path) -> dict[str, Path]:
    """The course's figures; one curve per config (config_hash_noseed), so runs of one preset with different
    settings (say 17 epochs and 3 epochs) are separate curves, labelled with what differs between them."""
    presets = _presets(runs, histories)
    files: dict[str, Path] = {}
    if BASELINE_PRESET in presets:
        by_id = {r.info.run_id: r for r in presets[BASELINE_PRESET]}
        rows = [summary_row(r, []) for r in presets[BASELINE_PRESET]]
        run = by_id[(best_row(rows) or rows[0]).run_id]
        files[f"{BASELINE_PRESET}_curves.png"] = plot_curves(
            histories[run.info.run_id], out_dir / f"{BASELINE_PRESET}_curves.png",
            title=f"{BASELINE_PRESET} baseline: {without_seed(run_name(run))}")
    for stem, title, groups in course_figure_groups(runs, histories):
        files[f"{stem}.png"] = plot_comparison(groups, out_dir / f"{stem}.png", title=title)
    return files


def _presets(runs: Sequence[Run], histories: dict[str, RunHistory]) -> dict[str, list[Run]]:
    """{preset: its runs with curves}."""
    presets: dict[str, list[Run]] = {}
    for run in runs:
        preset = preset_name(run)
        if preset and not histories[run.info.run_id].is_empty:
            presets.setdefault(preset, []).append(run)
    return presets


def course_figure_groups(runs: Sequence[Run], histories: dict[str, RunHistory]
                         ) -> list[tuple[str, str, dict[str, list[RunHistory]]]]:
    """(file stem, title, {legend label: histories of one config, one run per seed}) of each course figure with two
    presets or more. A preset's configs are told apart by the params that differ between them (`distinct_labels`):
    every config is a curve of its own."""
    presets = _presets(runs, histories)
    figures = []
    for stem, title, members in COURSE_FIGURES:
        present = [(preset, label) for preset, label in members if preset in presets]
        if len(present) < 2:
            continue
        groups: dict[str, list[RunHistory]] = {}
        for preset, label in present:
            configs = _by_config(presets[preset])
            extras = distinct_labels([_settings(config[0]) for config in configs]) if len(configs) > 1 else [""]
            for config, extra in zip(configs, extras):
                name = ", ".join(part for part in (_course_label(config[0], label, stem), extra) if part)
                groups[name] = [histories[row.run_id] for row in one_per_seed([summary_row(r, []) for r in config])]
        figures.append((stem, title, groups))
    return figures


def _sections(client: Any, runs: Sequence[Run]) -> list[tuple[str, list[Run]]]:
    """The runs by the sweep that launched them (their parent run), sweeps in the order of their first run; runs
    without a parent last, as "single runs"."""
    by_parent: dict[str | None, list[Run]] = {}
    for run in runs:
        by_parent.setdefault(run.data.tags.get(names.PARENT_RUN_ID), []).append(run)
    sections = []
    for parent_id, members in by_parent.items():
        if parent_id is None:
            continue
        try:
            parent = client.get_run(parent_id)
            started = time.strftime("%Y-%m-%d %H:%M", time.localtime((parent.info.start_time or 0) / 1000))
            heading = f"{sweep_title(run_name(parent))} (started {started}, parent run {parent_id})"
        except Exception:  # a deleted parent: its children are still worth a section
            heading = f"sweep of parent run {parent_id}"
        sections.append((heading, members))
    if None in by_parent:
        sections.append(("single runs (no sweep)", by_parent[None]))
    return sections


def write_report(client: Any, runs: Sequence[Run], out_dir: str | Path, title: str = "mlp-sweeps report",
                 searched: str = "", by_sweep: bool = False) -> dict[str, Path]:
    """Write every figure and table for `runs` into `out_dir`; returns {name: path}. With `by_sweep`, report.md has
    one section per sweep (in order), else one table for the whole selection (the runs of one sweep)."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    histories: dict[str, RunHistory] = {r.info.run_id: load_history(client, r) for r in runs}
    result = write_sweep_outputs(runs, histories, out_dir, title=title)
    files: dict[str, Path] = dict(result.files)

    used_names: set[str] = set()
    for run in runs:
        history = histories[run.info.run_id]
        if history.is_empty:
            continue
        name = safe_filename(run_name(run))
        if name in used_names:
            name = f"{name}_{run.info.run_id[:8]}"
        used_names.add(name)
        files[f"curves/{name}.png"] = plot_curves(history, out_dir / "curves" / f"{name}.png", title=run_name(run))
    files.update(_course_figures(runs, histories, out_dir))

    figure_links = [f"![{name}]({name})" for name in files if name.endswith(".png") and not name.startswith("curves/")]
    curve_links = [f"- [{name}]({name})" for name in files if name.startswith("curves/")]
    text = f"# {title}\n\n"
    if searched:
        text += f"Runs: {searched} ({len(runs)} runs).\n\n"
    text += "\n\n".join(figure_links) + "\n\n"
    for heading, members in _sections(client, runs) if by_sweep else [("Runs", list(runs))]:
        keys, rows = summary_rows(members, histories)
        groups = group_rows(rows, keys)
        text += summary_markdown(rows, keys, groups, title=heading, best=best_row(rows), level=2)
        judged = judge(groups, Objective())
        text += "\n" + verdict_markdown(judged, level=None) + "\n"
        found = importance(groups, keys, judged, seed_key=names.SEED_PARAM)
        if found is not None:  # which swept setting mattered in this section's runs
            text += "\n" + importance_markdown(found, judged.objective, level=None) + "\n"
    if curve_links:
        text += "## Curves of each run\n\n" + "\n".join(curve_links) + "\n"
    report_md = out_dir / "report.md"
    report_md.write_text(text)
    files["report.md"] = report_md
    return files
