"""One colour per configuration, in the order the configurations are listed (`config_colors`).

A sweep's comparison colours each config (all its seeds) by `config_colors` of its groups' keys (config_hash_noseed)
in the order the sweep ran them, so anything else that calls it with the same keys in the same order gets the same
colours. Hex strings, so the same values can be given to anything else that takes
a colour (e.g. MLflow's `mlflow.runColor` tag).
"""
from __future__ import annotations

from collections.abc import Sequence

# matplotlib's tab10, then tab20's lighter shades: distinct for up to 20 configs
_PALETTE = (
    "#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22", "#17becf",
    "#aec7e8", "#ffbb78", "#98df8a", "#ff9896", "#c5b0d5", "#c49c94", "#f7b6d2", "#c7c7c7", "#dbdb8d", "#9edae5",
)


def config_colors(keys: Sequence[str]) -> dict[str, str]:
    """{config key: "#rrggbb"} for configs in display order: tab10, then tab20's light shades, then viridis."""
    keys = list(dict.fromkeys(keys))
    if len(keys) <= len(_PALETTE):
        return {k: _PALETTE[i] for i, k in enumerate(keys)}
    from matplotlib import colormaps
    from matplotlib.colors import to_hex

    cmap = colormaps["viridis"]
    return {k: to_hex(cmap(i / (len(keys) - 1))) for i, k in enumerate(keys)}
