"""The config tree and the command line, checked before Hydra composes anything.

Hydra reports a YAML syntax error in a user's experiment or sweep file as a 40-line traceback ending in PyYAML's
message, a misspelled key as a block that advises ``+key=...``, and an experiment file without its
``# @package _global_`` header as "Key 'experiment' not in 'AppConfig'". ``config_problem`` finds the first such
problem of the command line and of every YAML file of the config tree (conf/, a ``--config-dir`` and the ``file://``
entries of a command-line ``hydra.searchpath``) and says it in one sentence, naming the file or the closest valid key.
"""
from __future__ import annotations

import argparse
import re
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

from hydra._internal.utils import get_args_parser
from hydra.plugins.config_source import ConfigSource

from .keys import bad_choice, schema_tree, unknown_knob, unknown_override, unknown_yaml_key

GLOBAL = "_global_"
PACKAGE_LINE = re.compile(r"^\s*#\s*@package\s+(\S+)")


def command_line(argv: Sequence[str]) -> argparse.Namespace:
    """The command line as Hydra itself parses it (its own parser: a bad flag exits as Hydra would)."""
    return get_args_parser().parse_args(list(argv))


def config_dirs(conf_dir: Path, args: argparse.Namespace) -> list[Path]:
    """conf/, the ``--config-dir`` directory and the ``file://`` entries of a ``hydra.searchpath=[...]`` override."""
    dirs = [conf_dir] + ([Path(args.config_dir)] if args.config_dir else [])
    for line in args.overrides:
        key, _, value = line.partition("=")
        if key.lstrip("+") == "hydra.searchpath":
            entries = (entry.strip().strip("'\"") for entry in value.strip().strip("[]").split(","))
            dirs += [Path(entry[len("file://"):]) for entry in entries if entry.startswith("file://")]
    return dirs


def config_groups(dirs: Iterable[Path]) -> set[str]:
    """The top-level config groups (experiment, sweep, ...) of the config dirs; Hydra's own are left out."""
    return {path.name for directory in dirs if Path(directory).expanduser().is_dir()
            for path in Path(directory).expanduser().iterdir()
            if path.is_dir() and path.name != "hydra" and not path.name.startswith((".", "_"))}


def config_problem(conf_dir: Path, argv: Sequence[str], knobs: Mapping[str, Iterable[str]] | None = None) -> str | None:
    """One sentence naming the first problem of the config tree or of the command line's keys (``knobs``: the keys
    of this project's sweepers, by name, see ``keys.unknown_knob``), or None."""
    args = command_line(argv)
    dirs = config_dirs(conf_dir, args)
    problem = tree_problem(dirs)
    if problem is None and not args.shell_completion:  # completion passes half-typed keys
        problem = unknown_override(args.overrides, "in the command line", config_groups(dirs))
    if problem is None and not args.shell_completion:
        problem = bad_choice(args.overrides, "in the command line")
    if problem is None and knobs:
        problem = unknown_knob(args.overrides, knobs)
    return problem


def tree_problem(dirs: Sequence[Path]) -> str | None:
    """One sentence naming the first YAML file of the config dirs that does not parse (its line and column), misses
    or misplaces its ``# @package`` header, or names a key that the schema does not have; or None."""
    import yaml

    groups = config_groups(dirs)  # a sweep file's axes may choose from them (experiment: task3c)
    for directory in dirs:
        for path in sorted(Path(directory).expanduser().rglob("*.yaml")):
            try:
                text = path.read_text()
                data = yaml.safe_load(text)
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
            problem = _file_problem(path, Path(directory).expanduser(), text, data, groups)
            if problem is not None:
                return problem
    return None


def _file_problem(path: Path, directory: Path, text: str, data: Any, groups: Iterable[str]) -> str | None:
    """The header or key problem of one parsed config file, or None."""
    group = path.parent.relative_to(directory).as_posix().strip(".")
    if group.split("/")[0] == "hydra" or not isinstance(data, dict):
        return None  # Hydra's own groups (launchers, sweepers) are Hydra's to check
    try:
        header = ConfigSource._get_header_dict(text)["package"]  # Hydra's own reading of the header
    except ValueError as exc:
        return f"bad '# @package' header in {path}: {exc}; write it as the file's first line: # @package _global_"
    if header is None:
        stray = next((m.group(1) for m in map(PACKAGE_LINE.match, text.splitlines()) if m), None)
        if stray is not None:  # Hydra reads the header only above every other line, comments included
            return (f"the '# @package {stray}' header of {path} is below another line, where Hydra does not read it: "
                    "move it to the file's first line")
        package = group.replace("/", ".")
        if package and package.split(".")[0] not in schema_tree():
            return (f"{path} has no '# @package _global_' header, so Hydra would put its keys under '{package}', which "
                    "the config does not have: add '# @package _global_' as the file's first line")
    else:
        package = "" if header == GLOBAL else header.removeprefix(GLOBAL + ".")
    return unknown_yaml_key(data, package, f"in {path}", groups)
