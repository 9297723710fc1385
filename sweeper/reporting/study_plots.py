"""Figures of an Optuna study for the search's parent run: the objective per trial with the best so far
(``optimization_history.png``) and how the objective depends on the searched parameters (``parallel_coordinates.png``
for two or more parameters, ``slice.png`` for one), drawn with Optuna's matplotlib visualisations."""
from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

from sweeper import names


def plot_study(study: Any, out_dir: str | Path) -> list[Path]:
    """Write the study's figures into ``out_dir``; none when no trial completed. Returns the files written."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from optuna.trial import TrialState
    from optuna.visualization import matplotlib as optuna_plots

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    if not study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)):
        return []
    params = {key for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)) for key in t.params}
    figures = [(names.OPTIMIZATION_HISTORY, optuna_plots.plot_optimization_history)]
    if len(params) >= 2:
        figures.append((names.PARALLEL_COORDINATES, optuna_plots.plot_parallel_coordinate))
    else:
        figures.append((names.SLICE_PLOT, optuna_plots.plot_slice))
    written = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # Optuna marks its matplotlib plots experimental
        for filename, plot in figures:
            axes = plot(study)
            figure = (axes.flat[0] if hasattr(axes, "flat") else axes).get_figure()
            figure.set_size_inches(10, 5)
            figure.tight_layout()
            figure.savefig(out_dir / filename, dpi=100)
            plt.close(figure)
            written.append(out_dir / filename)
    return written
