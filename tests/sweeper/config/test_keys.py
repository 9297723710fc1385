"""A misspelled config key is refused in one line naming the closest valid key and the valid keys of its group, at
every entry point (command line, sweep axis, search space, config file), before any store or run exists."""
from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra

from sweeper.config.checks import ConfigError, validate_grid
from sweeper.config.files import tree_problem
from sweeper.config.keys import bad_choice, enum_choices, override_key, unknown_key, unknown_override
from sweeper.config.schema import EarlyStoppingConf, ModelConf, TrainerConf
from sweeper.sweep.search import check_space

from ...handshake import HANG
from ..sweeper_helpers import CONF, run_cli, sqlite_uri

MODEL_KEYS = ", ".join(sorted(f.name for f in dataclasses.fields(ModelConf)))
WIDTH_HINT = f"did you mean 'model.width'? Valid keys of model: {MODEL_KEYS}"
GROUPS = {"data", "experiment", "model", "optimizer", "sweep", "tracking", "trainer"}


def test_the_closest_key_and_the_group_come_from_the_schema():
    assert unknown_key("model.widht", "in the command line") == (
        f"unknown config key 'model.widht' (in the command line): {WIDTH_HINT}")
    nested = unknown_key("trainer.early_stopping.patiance", "in x")
    assert nested.endswith("did you mean 'trainer.early_stopping.patience'? Valid keys of trainer.early_stopping: "
                           "enabled, patience, restore_best")
    trainer = unknown_key("trainer.epoch", "in x")
    assert "did you mean 'trainer.epochs'?" in trainer
    values = [f.name for f in dataclasses.fields(TrainerConf) if f.name != "early_stopping"]
    nested_values = [f"early_stopping.{f.name}" for f in dataclasses.fields(EarlyStoppingConf)]
    assert trainer.endswith(", ".join(sorted(values + nested_values)))
    # a misspelled group at the top, a key in the wrong group, a key below a value, no close key at all
    assert "did you mean 'model.width'? Valid top-level keys and config groups: data, experiment, model, name, " \
           "optimizer, sweep, sweep_name, tracking, trainer" in unknown_key("modle.width", "in x", GROUPS)
    assert "did you mean 'experiment'?" in unknown_key("experimnt", "in x", GROUPS)
    assert "did you mean 'optimizer.lr'?" in unknown_key("model.lr", "in x")
    assert "did you mean 'model.width'?" in unknown_key("model.width.x", "in x")
    assert unknown_key("model.zzzzzz", "in x").endswith(f"(in x); valid keys of model: {MODEL_KEYS}")


def test_valid_keys_and_groups_pass():
    for key in ("model.width", "trainer.early_stopping", "trainer.early_stopping.patience", "name", "data.root"):
        assert unknown_key(key, "in x") is None
    assert unknown_key("experiment", "in x", GROUPS) is None
    assert unknown_key("experiment", "in x") is not None  # a group is no key of a config file


def test_what_hydra_alone_decides_is_not_checked():
    for line in ("+model.widht=3", "++foo=1", "~model.width", "~model.widht=3", "hydra.sweeper.n_trials=3",
                 "hydra/launcher=dryrun", "model@foo=mlp", "justaword"):
        assert override_key(line) is None, line
    assert override_key("model.widht=choice(1,2)") == "model.widht"
    assert unknown_override(["experiment=task3c", "+sweep=width_depth", "model.width=8,16"], "in x", GROUPS) is None


def test_a_value_outside_an_enum_key_s_choices_names_the_closest_and_all():
    assert enum_choices("model.init") == ("uniform", "fan_in", "he", "xavier")
    assert enum_choices("model.width") is None and enum_choices("model.nothing") is None
    assert bad_choice(["model.init=xavir"], "in x") == (
        "invalid value 'xavir' for model.init (in x): did you mean 'xavier'? Valid values: uniform, fan_in, he, xavier")
    # a sweep axis and a search space's choice are checked value by value
    assert "invalid value 'tanhh' for model.activation" in bad_choice(["model.activation=relu,tanhh"], "in x")
    assert "invalid value 'fanin'" in bad_choice(["model.init=choice(he, fanin)"], "in x")
    assert bad_choice(["model.init=he,xavier", "data.split=standard", "model.width=8,16", "model.init=${x}"],
                      "in x") is None


def _write(root: Path, path: str, text: str) -> Path:
    (root / path).parent.mkdir(parents=True, exist_ok=True)
    (root / path).write_text(text)
    return root


def test_config_files_name_the_key_or_the_missing_header(tmp_path):
    user = _write(tmp_path / "a", "experiment/wide.yaml",
                  "# @package _global_\ndefaults:\n  - override /optimizer: momentum\nmodel:\n  widht: 16\n")
    assert tree_problem([user]) == (f"unknown config key 'model.widht' (in {user / 'experiment/wide.yaml'}): "
                                    f"{WIDTH_HINT}")
    group_file = _write(tmp_path / "b", "model/big.yaml", "hidden_sizes: [256]\nwidht: 4\n")  # package: model
    assert f"'model.widht' (in {group_file / 'model/big.yaml'}): {WIDTH_HINT}" in tree_problem([group_file])
    sweep = _write(tmp_path / "c", "sweep/grid.yaml",
                   "# @package _global_\nhydra:\n  sweeper:\n    params:\n      experiment: task3c\n"
                   "      model.widht: 16,32\n")
    _write(sweep, "experiment/task3c.yaml", "# @package _global_\nname: task3c\n")
    expected = f"'model.widht' (in {sweep / 'sweep/grid.yaml'}, hydra.sweeper.params): {WIDTH_HINT}"
    assert expected in tree_problem([sweep])
    headless = _write(tmp_path / "d", "experiment/plain.yaml", "name: plain\nmodel:\n  width: 16\n")
    assert tree_problem([headless]) == (
        f"{headless / 'experiment/plain.yaml'} has no '# @package _global_' header, so Hydra would put its keys under "
        "'experiment', which the config does not have: add '# @package _global_' as the file's first line")
    late = _write(tmp_path / "e", "experiment/late.yaml", "# my preset\n# @package _global_\nname: late\n")
    assert "header of" in tree_problem([late]) and "move it to the file's first line" in tree_problem([late])
    fine = _write(tmp_path / "f", "experiment/fine.yaml", "\n# @package _global_\nname: fine\nmodel:\n  width: 8\n")
    _write(fine, "hydra/launcher/mine.yaml", "anything: 1\n")  # Hydra's own groups are Hydra's to check
    assert tree_problem([fine]) is None


@pytest.fixture
def compose_user_sweep(tmp_path):
    """Compose with a user's sweep file found through hydra.searchpath, as the launching process does."""
    _write(tmp_path, "sweep/mine.yaml", "# @package _global_\nsweep_name: mine\nhydra:\n  sweeper:\n    params:\n"
                                        "      model.widht: 16,32\n      optimizer.lr: 0.1\n")
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        yield lambda *overrides: compose("config", return_hydra_config=True, overrides=[
            f"hydra.searchpath=[file://{tmp_path}]", "+sweep=mine", "data=digits", *overrides])
    GlobalHydra.instance().clear()


def test_validate_grid_names_a_misspelled_axis_of_a_sweep_file(compose_user_sweep):
    with pytest.raises(ConfigError) as raised:
        validate_grid(compose_user_sweep())
    assert str(raised.value) == (f"unknown config key 'model.widht' (in hydra.sweeper.params of sweep=mine): "
                                 f"{WIDTH_HINT}")


def test_check_space_names_a_misspelled_key_of_a_search_space(compose_user_sweep):
    with pytest.raises(ConfigError) as raised:
        check_space(compose_user_sweep("hydra/sweeper=random"), ["optimizer.lr=interval(0.01, 0.1)"])
    assert f"'model.widht' (in hydra.sweeper.params of sweep=mine): {WIDTH_HINT}" in str(raised.value)


HEADLESS = "name: plain\nmodel:\n  width: 16\n"
ENTRY_POINTS = {  # id: (arguments, {file under the user's config dir: text}, what stderr says besides the key)
    "command_line": (["model.widht=16"], {}, WIDTH_HINT),
    "sweep_axis": (["-m", "model.widht=16,32"], {}, WIDTH_HINT),
    "search_space": (["-m", "hydra/sweeper=random", "model.widht=choice(16,32)"], {}, WIDTH_HINT),
    "enum_value": (["model.init=default"], {}, "invalid value 'default' for model.init (in the command line): "
                                                 "Valid values: uniform, fan_in, he, xavier"),
    "sweep_file": (["-m", "+sweep=mine"], {"sweep/mine.yaml": "# @package _global_\nhydra:\n  sweeper:\n    params:\n"
                                                              "      model.widht: 16,32\n"}, WIDTH_HINT),
    "search_space_file": (["-m", "+sweep=mine"], {"sweep/mine.yaml": (
        "# @package _global_\ndefaults:\n  - override /hydra/sweeper: random\nhydra:\n  sweeper:\n    params:\n"
        "      optimizer.lr: tag(log, interval(0.01, 0.1))\n      model.widht: choice(16, 32)\n")}, WIDTH_HINT),
    "experiment_file": (["experiment=mine"], {"experiment/mine.yaml": "# @package _global_\nmodel:\n  widht: 16\n"},
                        WIDTH_HINT),
    "file_without_header": (["experiment=plain"], {"experiment/plain.yaml": HEADLESS},
                            "add '# @package _global_' as the file's first line"),
}


@pytest.mark.integration
@pytest.mark.parametrize("entry", ENTRY_POINTS)
def test_each_entry_point_refuses_a_typo_in_one_line_before_any_work(tmp_path, entry):
    args, files, says = ENTRY_POINTS[entry]
    user = tmp_path / "user_conf"
    user.mkdir()
    for path, text in files.items():
        _write(user, path, text)
    db = tmp_path / "store" / "mlflow.db"
    args = [*args, "data=digits", "trainer.epochs=1", f"tracking.uri={sqlite_uri(db)}"]
    if entry == "sweep_file":  # a user's sweep through hydra.searchpath (an override: after the flags)
        args.append(f"hydra.searchpath=[file://{user}]")
    else:
        args = ["--config-dir", str(user), *args]
    proc = run_cli(args, tmp_path, timeout=HANG)
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert proc.stderr.strip().splitlines() == [proc.stderr.strip()]  # one line, no traceback
    assert proc.stderr.startswith("Error: ") and says in proc.stderr
    if files:
        assert str(user / next(iter(files))) in proc.stderr
    assert not db.parent.exists() and not (tmp_path / "outputs").exists()  # no store opened, no run dir made


@pytest.mark.integration
def test_legitimate_additions_still_work(tmp_path):
    """`+sweep=...` adds a group and `++key=...` forces a value: Hydra's business, never taken for a typo."""
    proc = run_cli(["-m", "+sweep=width_depth", "hydra/launcher=dryrun", "data=digits",
                    "++trainer.early_stopping.patience=3"], tmp_path, timeout=HANG)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "Dry run: 9 job(s)" in proc.stdout and "++trainer.early_stopping.patience=3" in proc.stdout
