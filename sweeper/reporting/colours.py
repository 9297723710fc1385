"""One colour per configuration, shared by ``comparison.png`` and the MLflow UI (the runs' ``mlflow.runColor`` tag).

A sweep lists its configurations (its groups of seeds, by ``config_hash_noseed``) in the order it ran them;
configuration ``i`` gets ``config_colour(i)`` in the figure, and every run of it, whatever its seed, gets the same
colour in the UI (``config_colours`` gives both the same mapping). Colours go by position, not by hashing the config: a
hash would give two of a sweep's few configs the same colour now and then, and distinct configs must look distinct.
A sweep of more than 20 configs gets generated colours past the palette; its comparison.png colours only the best
few anyway (sweeper.reporting.plots.MAX_COLOURED).
Hex strings, so the same values serve matplotlib and MLflow.
"""
from __future__ import annotations

import colorsys
import math
from collections.abc import Iterable, Sequence

# matplotlib's tab10 (the default "C0".."C9" cycle), then the lighter halves of tab20 for configs 10-19
PALETTE = (
    "#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22", "#17becf",
    "#aec7e8", "#ffbb78", "#98df8a", "#ff9896", "#c5b0d5", "#c49c94", "#f7b6d2", "#c7c7c7", "#dbdb8d", "#9edae5",
)


# Past the palette: hues a golden angle apart (each new hue falls in the widest gap left), in three lightness bands.
_GOLDEN = (math.sqrt(5) - 1) / 2
_LIGHTNESS = (0.38, 0.52, 0.66)


def config_colour(index: int) -> str:
    """``#rrggbb`` of the sweep's ``index``-th configuration (0-based): the palette for the first 20, then generated
    colours, so that no two of a sweep's first 1,000 configs share a colour in the UI (a test checks it)."""
    if index < 0:
        raise ValueError(f"config index must be >= 0, got {index}")
    if index < len(PALETTE):
        return PALETTE[index]
    k = index - len(PALETTE)
    r, g, b = colorsys.hls_to_rgb((k * _GOLDEN) % 1.0, _LIGHTNESS[k % len(_LIGHTNESS)], 0.7)
    return f"#{round(r * 255):02x}{round(g * 255):02x}{round(b * 255):02x}"


def config_colours(keys: Sequence[str]) -> dict[str, str]:
    """{config key: colour} for configs in display order (repeated keys keep their first colour)."""
    return {key: config_colour(i) for i, key in enumerate(dict.fromkeys(keys))}


def run_colours(groups: Iterable[Sequence[str]]) -> dict[str, str]:
    """{run_id: colour} for groups of run ids, given in the comparison's order (one group = one configuration)."""
    return {run_id: config_colour(i) for i, run_ids in enumerate(groups) for run_id in run_ids}
