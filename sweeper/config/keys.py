"""Config key names checked against the schema, with the closest valid key, before anything is composed or run.

Hydra refuses ``model.widht=16`` in a 7-line block that advises ``+model.widht=16`` (which only moves the error on to
``checks.validate``), and a typo in an experiment file as a ConfigKeyError block. ``unknown_key`` says it in one
sentence: the key, where it was written, the closest valid key (``difflib``) and the valid keys of its group, all read
from the dataclasses of ``schema.py``. Keys added with ``+``/``++``, deletions (``~``), ``group@package`` overrides,
config-group paths (``hydra/launcher``) and ``hydra.*`` keys are Hydra's business and pass unchecked.
"""
from __future__ import annotations

import dataclasses
import difflib
import typing
from enum import Enum
from functools import lru_cache
from typing import Any, Iterable, Mapping

from .schema import AppConfig

Tree = Mapping[str, Any]  # key -> its subtree (a dataclass of the schema) or None (a value)


@lru_cache(maxsize=None)
def schema_tree(cls: type = AppConfig) -> Tree:
    """The schema's keys as a tree: a dataclass field is a subtree, any other field (an Optional[int], a list) None."""
    hints = typing.get_type_hints(cls)  # the schema's annotations are strings (postponed evaluation)
    tree = {}
    for f in dataclasses.fields(cls):
        hint = hints[f.name]
        node = next((t for t in (hint, *typing.get_args(hint)) if dataclasses.is_dataclass(t)), None)
        tree[f.name] = schema_tree(node) if node is not None else None
    return tree


def subtree(key: str) -> Tree | None:
    """The schema's subtree at a dotted key ("" is the root), or None if the key names a value or nothing."""
    node: Any = schema_tree()
    for part in key.split(".") if key else ():
        node = node.get(part) if isinstance(node, Mapping) else None
    return node


def _paths(tree: Tree, prefix: str = "", leaves_only: bool = False) -> list[str]:
    found = []
    for key, child in tree.items():
        if child is None or not leaves_only:
            found.append(prefix + key)
        if child is not None:
            found += _paths(child, f"{prefix}{key}.", leaves_only)
    return found


def unknown_key(key: str, where: str, groups: Iterable[str] = ()) -> str | None:
    """One sentence if the dotted ``key`` is not in the schema, naming the closest valid key and the valid keys of the
    deepest group the key reaches; None if it is valid. ``groups`` (config groups, e.g. experiment) are valid top-level
    keys of an override, not of a YAML file."""
    parts, groups = key.split("."), sorted(set(groups))
    node, known = schema_tree(), 0  # node: the group that the key's first `known` parts name
    while known < len(parts) - 1 and isinstance(node.get(parts[known]), Mapping):
        node, known = node[parts[known]], known + 1
    if (known == len(parts) - 1 and parts[-1] in node) or (len(parts) == 1 and key in groups):
        return None
    group = ".".join(parts[:known])
    prefix = f"{group}." if group else ""
    # compared without the group's prefix, which would make every key of the group look close (model.lr ~ model.init)
    match = [prefix + m for m in difflib.get_close_matches(".".join(parts[known:]),
                                                           _paths(node) + ([] if group else groups), n=1)]
    if not match:  # a key in the wrong group (model.lr): the closest name anywhere in the schema
        leaves = _paths(schema_tree(), leaves_only=True)
        names = difflib.get_close_matches(parts[-1], [leaf.rsplit(".", 1)[-1] for leaf in leaves], n=1)
        match = [leaf for leaf in leaves if names and leaf.rsplit(".", 1)[-1] == names[0]][:1]
    valid = _paths(node, leaves_only=True) if group else {*node, *groups}
    listing = f"valid keys of {group}" if group else "valid top-level keys and config groups"
    said = f": did you mean '{match[0]}'? {listing[0].upper()}{listing[1:]}" if match else f"; {listing}"
    return f"unknown config key '{key}' ({where}){said}: {', '.join(sorted(valid))}"


def override_key(line: str) -> str | None:
    """The schema key an override line (``model.width=16``, a sweep axis, a search-space line) sets, or None where
    Hydra alone decides: ``+``/``++`` additions, ``~`` deletions, ``group@package``, group paths, ``hydra.*``, and a
    line without ``=`` (Hydra's grammar error)."""
    if "=" not in line:
        return None
    key = line.split("=", 1)[0].strip()
    if not key or key[0] in "+~" or "@" in key or "/" in key or key.split(".")[0] == "hydra":
        return None
    return key


def unknown_override(lines: Iterable[str], where: str, groups: Iterable[str]) -> str | None:
    """``unknown_key`` of the first override line that sets an unknown key, or None."""
    groups = set(groups)
    for line in lines:
        key = override_key(line)
        problem = unknown_key(key, where, groups) if key is not None else None
        if problem is not None:
            return problem
    return None


def unknown_yaml_key(data: Mapping, package: str, where: str, groups: Iterable[str]) -> str | None:
    """``unknown_key`` of the first unknown key of a config file's mapping placed at ``package`` ("" is the top
    level), or None. A top-level file's ``hydra.sweeper.params`` are checked as override lines (sweep axes)."""
    prefix = f"{package}." if package else ""
    for key, child in data.items():
        key = str(key)
        if not package and key == "defaults":
            continue
        if not package and key == "hydra":
            problem = unknown_override(_axes(_get(_get(child, "sweeper"), "params")), f"{where}, hydra.sweeper.params",
                                       groups)
        else:
            problem = unknown_key(prefix + key, where)
            if problem is None and isinstance(child, Mapping) and subtree(prefix + key) is not None:
                problem = unknown_yaml_key(child, prefix + key, where, groups)
        if problem is not None:
            return problem
    return None


def _get(node: Any, key: str) -> Any:
    return node.get(key) if isinstance(node, Mapping) else None


def _axes(params: Any) -> list[str]:
    """``hydra.sweeper.params`` as the override lines Hydra's sweepers build from it."""
    return [f"{key}={value}" for key, value in params.items()] if isinstance(params, Mapping) else []


def unknown_sweep_key(config: Any) -> str | None:
    """``unknown_key`` of the first unknown key of a composed sweep's axes: ``hydra.sweeper.params`` (a sweep file's,
    wherever it lives), then the command line; None if all are known. The groups are those the defaults tree chose
    from."""
    if not set(schema_tree()) <= set(config):  # another app's config (Hydra's own sweeper test suite): not ours
        return None
    choices = config.hydra.runtime.get("choices") or {}
    groups = {str(group).split("/")[0] for group in choices}
    sweep = choices.get("sweep")
    where = f"in hydra.sweeper.params of sweep={sweep}" if sweep else "in hydra.sweeper.params"
    return (unknown_override(_axes(config.hydra.sweeper.get("params")), where, groups)
            or unknown_override(config.hydra.overrides.task, "in the command line", groups))


def unknown_knob(lines: Iterable[str], knobs: Mapping[str, Iterable[str]]) -> str | None:
    """One sentence for a ``hydra.sweeper.<knob>`` override that the sweeper chosen on the same command line
    (``hydra/sweeper=<name>``, one of ``knobs``: name -> its config's keys) does not have, naming the closest knob and
    all of them; None otherwise (Hydra's own sweepers, and a sweeper chosen by a sweep file, are Hydra's business)."""
    lines = list(lines)
    chosen = [line.split("=", 1)[1] for line in lines if line.split("=", 1)[0].lstrip("+") == "hydra/sweeper"]
    if not chosen or chosen[-1] not in knobs:
        return None
    valid = sorted(knobs[chosen[-1]])
    for line in lines:
        key = line.split("=", 1)[0].lstrip("+~")
        parts = key.split(".")
        if len(parts) >= 3 and parts[:2] == ["hydra", "sweeper"] and parts[2] not in valid:
            match = difflib.get_close_matches(parts[2], valid, n=1)
            said = f"did you mean 'hydra.sweeper.{match[0]}'? " if match else ""
            return (f"unknown config key '{key}' of hydra/sweeper={chosen[-1]} (in the command line): {said}"
                    f"Valid keys of hydra.sweeper: {', '.join(valid)}")
    return None


@lru_cache(maxsize=None)
def enum_choices(key: str) -> tuple[str, ...] | None:
    """The valid values of a schema key typed by an Enum (``model.init``: uniform, fan_in, he, xavier); None for any
    other key."""
    node: Any = AppConfig
    for part in key.split("."):
        if not dataclasses.is_dataclass(node):
            return None
        hints = typing.get_type_hints(node)
        if part not in hints:
            return None
        node = next((t for t in (hints[part], *typing.get_args(hints[part])) if isinstance(t, type)
                     and (dataclasses.is_dataclass(t) or issubclass(t, Enum))), None)
    return tuple(member.name for member in node) if isinstance(node, type) and issubclass(node, Enum) else None


def bad_choice(lines: Iterable[str], where: str) -> str | None:
    """One sentence for the first override that gives an Enum key a value it does not have (``model.init=default``,
    or one value of a sweep axis ``model.init=uniform,defualt``), naming the closest valid value and all of them."""
    for line in lines:
        key = override_key(line)
        choices = enum_choices(key) if key is not None else None
        if choices is None:
            continue
        text = line.split("=", 1)[1].strip()
        if text.startswith("choice(") and text.endswith(")"):
            text = text[len("choice("):-1]
        elif any(c in text for c in "([{$"):  # an interpolation or another sweep form: Hydra checks it
            continue
        for value in (v.strip().strip("'\"") for v in text.split(",")):
            if value not in choices:
                match = difflib.get_close_matches(value, choices, n=1)
                said = f"did you mean '{match[0]}'? " if match else ""
                return f"invalid value '{value}' for {key} ({where}): {said}Valid values: {', '.join(choices)}"
    return None
