"""YAML syntax of the config tree, checked before Hydra composes anything.

Hydra reports a YAML syntax error in a user's experiment or sweep file as a 40-line traceback ending in PyYAML's
message; ``syntax_error`` finds the first broken file of the config tree (conf/, and a ``--config-dir`` of the
command line) and says where in one sentence.
"""
from __future__ import annotations

from pathlib import Path
from typing import Iterable, Sequence


def config_dirs(conf_dir: Path, argv: Sequence[str]) -> list[Path]:
    """conf/ plus the directory of ``--config-dir``/``-cd`` on the command line (both spellings, ``=`` or not)."""
    dirs = [conf_dir]
    for i, arg in enumerate(argv):
        for flag in ("--config-dir", "-cd"):
            if arg == flag and i + 1 < len(argv):
                dirs.append(Path(argv[i + 1]))
            elif arg.startswith(flag + "="):
                dirs.append(Path(arg.split("=", 1)[1]))
    return dirs


def syntax_error(dirs: Iterable[Path]) -> str | None:
    """One sentence naming the first YAML file that does not parse, its line and column, or None."""
    import yaml

    for directory in dirs:
        for path in sorted(Path(directory).expanduser().rglob("*.yaml")):
            try:
                yaml.safe_load(path.read_text())
            except yaml.MarkedYAMLError as exc:
                mark = exc.problem_mark or exc.context_mark
                where = f", line {mark.line + 1}, column {mark.column + 1}" if mark else ""
                problem = exc.problem or ""
                if exc.context:
                    started = exc.context_mark
                    at = f" (from line {started.line + 1}, column {started.column + 1})" if started else ""
                    problem = f"{exc.context}{at}, {problem}"
                return f"YAML syntax error in {path}{where}: {problem}; fix the file (or move it out of {directory})"
            except (OSError, UnicodeDecodeError, yaml.YAMLError) as exc:
                return f"cannot read config file {path}: {exc}"
    return None
