"""Every shipped conf/ file composes into the schema, every experiment matches SPEC's table, every sweep expands.

"Shipped" means tracked by git: a user's own experiment or sweep file in conf/ is neither required nor checked here.
"""
from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest
from hydra._internal.core_plugins.basic_sweeper import BasicSweeper
from hydra.core.override_parser.overrides_parser import OverridesParser
from omegaconf import OmegaConf

from sweeper.schema import effective_hidden_sizes, to_core, validate

from ..handshake import HANG
from .sweeper_helpers import CONF, REPO, compose_cfg



def shipped_conf_files() -> list[Path]:
    """The conf/ YAML files of the repository (git ls-files), not the ones a user added; all of them outside git."""
    try:
        listed = subprocess.run(["git", "ls-files", "-z", "--", "conf"], cwd=REPO, capture_output=True, text=True,
                                check=True, timeout=HANG).stdout.split("\0")
    except (OSError, subprocess.SubprocessError):
        return sorted(CONF.rglob("*.yaml"))
    return sorted(REPO / name for name in listed if name.endswith(".yaml"))


SHIPPED = shipped_conf_files()
GROUP_FILES = [p for p in SHIPPED if p.parent.parent == CONF]

# SPEC's table, cumulative: (hidden sizes, activation, init, lr, momentum)
EXPERIMENTS = {
    "task2c": ((64,), "sigmoid", "uniform", 0.1, 0.0),
    "task3a": ((64,), "sigmoid", "fan_in", 0.1, 0.0),
    "task3b": ((64,), "improved_sigmoid", "fan_in", 0.1, 0.0),
    "task3c": ((64,), "improved_sigmoid", "fan_in", 0.02, 0.9),
    "task4a": ((32,), "improved_sigmoid", "fan_in", 0.02, 0.9),
    "task4b": ((128,), "improved_sigmoid", "fan_in", 0.02, 0.9),
    "task4d": ((60, 60), "improved_sigmoid", "fan_in", 0.02, 0.9),
    "task4e": ((64,) * 10, "improved_sigmoid", "fan_in", 0.02, 0.9),
    "task4f": ((64,) * 10, "relu", "fan_in", 0.02, 0.9),
    "task3b_only": ((64,), "improved_sigmoid", "uniform", 0.1, 0.0),
    "task3c_only": ((64,), "sigmoid", "uniform", 0.02, 0.9),
}

SWEEPS = {
    "task3_tricks": [["experiment=task2c"], ["experiment=task3a"], ["experiment=task3b"], ["experiment=task3c"]],
    "task3_single_tricks": [["experiment=task2c"], ["experiment=task3a"], ["experiment=task3b_only"],
                            ["experiment=task3c_only"]],
    "task4_width": [["experiment=task4a"], ["experiment=task3c"], ["experiment=task4b"]],
    "task4_depth": [["experiment=task4d"], ["experiment=task4e"], ["experiment=task4f"]],
}


def expand(cli_overrides):
    """The job override lists Hydra's basic sweeper would launch for this command line (sweep files included)."""
    parser = OverridesParser.create()
    fixed = [o.input_line for o in parser.parse_overrides(list(cli_overrides)) if not o.is_sweep_override()]
    cfg = compose_cfg(fixed, return_hydra_config=True)
    swept = [f"{key}={value}" for key, value in (cfg.hydra.sweeper.params or {}).items()]
    # as BasicSweeper.sweep does: grid params first, then the command line, whose value wins for the same key
    batches = BasicSweeper.split_arguments(parser.parse_overrides(swept + list(cli_overrides)), None)
    return [list(job) for batch in batches for job in batch]


def test_every_group_file_is_covered_and_composes():
    assert GROUP_FILES, "conf/ has no group files"
    for path in GROUP_FILES:
        group, option = path.parent.name, path.stem
        override = f"+{group}={option}" if group == "sweep" else f"{group}={option}"
        cfg = compose_cfg([override])
        validate(cfg)
        to_core(cfg)
    # every preset of SPEC's table and every sweep preset is shipped (a user's own files may sit beside them)
    assert set(EXPERIMENTS) <= {p.stem for p in GROUP_FILES if p.parent.name == "experiment"}
    assert set(SWEEPS) | {"width_depth"} <= {p.stem for p in GROUP_FILES if p.parent.name == "sweep"}


def test_every_hydra_preset_in_conf_composes():
    presets = [p for p in SHIPPED if p.parent.parent.parent == CONF and p.parent.parent.name == "hydra"]
    assert presets, "conf/hydra/ has no presets"
    for path in presets:
        group = path.parent.relative_to(CONF).as_posix()
        cfg = compose_cfg([f"{group}={path.stem}"], return_hydra_config=True)
        assert OmegaConf.select(cfg, group.replace("/", "."))["_target_"], path
    # no shipped file sits where the two tests above would miss it
    assert set(SHIPPED) == {CONF / "config.yaml", *GROUP_FILES, *presets}


def test_defaults_are_the_course_baseline():
    cfg = compose_cfg()
    assert effective_hidden_sizes(cfg.model) == (64,)
    model, train = to_core(cfg)
    assert (model.activation, model.init, model.bias) == ("sigmoid", "uniform", "input_only")
    assert (train.epochs, train.batch_size, train.lr, train.momentum) == (50, 32, 0.1, 0.0)
    assert (train.validations_per_epoch, train.early_stopping, train.patience, train.restore_best) == (5, True, 50, False)
    assert (cfg.data.name.value, cfg.data.split.value, cfg.data.normalization.value) == ("mnist", "assignment", "train")


@pytest.mark.parametrize("name", sorted(EXPERIMENTS))
def test_experiment_matches_spec(name):
    cfg = compose_cfg([f"experiment={name}"])  # no leading "+": the group has a null default
    validate(cfg)
    model, train = to_core(cfg)
    assert cfg.name == name
    assert (model.hidden_sizes, model.activation, model.init, train.lr, train.momentum) == EXPERIMENTS[name]
    assert model.bias == "input_only" and train.epochs == 50 and train.batch_size == 32


def test_explicit_hidden_sizes_win_over_width_and_depth():
    cfg = compose_cfg(["experiment=task4e", "model.hidden_sizes=[128,32]", "model.width=7"])
    assert to_core(cfg)[0].hidden_sizes == (128, 32)
    cfg = compose_cfg(["experiment=task3c", "model.width=32", "model.depth=3"])
    assert to_core(cfg)[0].hidden_sizes == (32, 32, 32)


@pytest.mark.parametrize("name", sorted(SWEEPS))
def test_sweep_presets_expand(name):
    jobs = expand([f"+sweep={name}"])
    assert [[o for o in job if not o.startswith("+sweep")] for job in jobs] == SWEEPS[name]
    for job in jobs:
        cfg = compose_cfg(job)
        validate(cfg)
        assert cfg.sweep_name == name


def test_width_depth_grid_expands_and_cli_narrows_it():
    jobs = expand(["+sweep=width_depth"])
    assert len(jobs) == 9
    sizes = {to_core(compose_cfg(job))[0].hidden_sizes for job in jobs}
    assert sizes == {(w,) * d for w in (32, 64, 128) for d in (1, 2, 3)}
    assert len(expand(["+sweep=width_depth", "model.width=32,64", "model.depth=1"])) == 2


@pytest.mark.parametrize(
    "cli, hidden_sizes",
    [
        (["experiment=task2c,task3a,task3b,task3c"], [(64,)] * 4),
        (["experiment=task3c", "model.hidden_sizes=[32],[64],[128]"], [(32,), (64,), (128,)]),
        (["model.width=32,64,128", "model.depth=1,2"], [(w,) * d for w in (32, 64, 128) for d in (1, 2)]),
    ],
)
def test_issue_command_lines_expand(cli, hidden_sizes):
    jobs = expand(cli)
    got = []
    for job in jobs:
        cfg = compose_cfg(job)
        validate(cfg)
        got.append(to_core(cfg)[0].hidden_sizes)
    assert sorted(got) == sorted(hidden_sizes)


def test_outputs_are_absolute_and_outside_the_source_tree(monkeypatch):
    monkeypatch.delenv("MLP_SWEEPS_OUTPUTS", raising=False)
    cfg = compose_cfg(return_hydra_config=True)
    for key in ("hydra.run.dir", "hydra.sweep.dir"):
        path = OmegaConf.select(cfg, key)
        assert path.startswith(str(REPO / "outputs") + "/"), (key, path)


def test_help_lists_the_presets_and_examples(tmp_path):
    from .sweeper_helpers import run_cli

    proc = run_cli(["--help"], tmp_path)
    assert proc.returncode == 0, proc.stderr

    def listed(group):  # Hydra's "== Configuration groups ==" line "<group>: a, b, c"
        (line,) = re.findall(rf"^{group}: (.*)$", proc.stdout, flags=re.MULTILINE)
        return set(line.split(", "))

    assert set(EXPERIMENTS) <= listed("experiment")  # a user's own presets may be listed too
    assert set(SWEEPS) | {"width_depth"} <= listed("sweep")
    assert "mlp-sweep -m +sweep=task4_width" in proc.stdout


def test_command_line_group_choice_wins_over_the_experiment():
    model, train = to_core(compose_cfg(["experiment=task3c", "optimizer=sgd"]))
    assert (train.lr, train.momentum, model.activation) == (0.1, 0.0, "improved_sigmoid")
    assert to_core(compose_cfg(["experiment=task3c", "optimizer.lr=0.05"]))[1].momentum == 0.9
