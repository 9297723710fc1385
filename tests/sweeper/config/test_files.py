"""A YAML syntax error in a config file is one sentence naming the file, line and column, before Hydra starts."""
from __future__ import annotations

from pathlib import Path

import pytest

from sweeper.config.files import command_line, config_dirs, tree_problem

from ...handshake import HANG

from ..sweeper_helpers import CONF, run_cli

BROKEN = "# @package _global_\nname: broken\nmodel:\n  width: [32\n"


def test_the_shipped_config_tree_parses_and_names_only_schema_keys():
    assert tree_problem([CONF]) is None


def test_syntax_error_names_file_line_and_column(tmp_path):
    (tmp_path / "experiment").mkdir()
    (tmp_path / "experiment" / "broken.yaml").write_text(BROKEN)
    (tmp_path / "experiment" / "fine.yaml").write_text("# @package _global_\nname: fine\n")
    message = tree_problem([CONF, tmp_path])
    assert message.startswith(f"YAML syntax error in {tmp_path / 'experiment' / 'broken.yaml'}, line 5, column 1: ")
    assert "while parsing a flow sequence (from line 4, column 10)" in message and "expected ',' or ']'" in message
    (tmp_path / "experiment" / "broken.yaml").write_text("model:\n width: 3\n  depth: 2\n")
    assert ", line 3, column 8: mapping values are not allowed here" in tree_problem([tmp_path])


def test_config_dirs_reads_the_flag_as_hydra_does_and_the_searchpath_override():
    assert config_dirs(CONF, command_line(["-cd=/b", "x=1"])) == [CONF, Path("/b")]
    searchpath = command_line(["--config-dir", "/a", "hydra.searchpath=[file:///c,pkg://d,'file:///e']"])
    assert config_dirs(CONF, searchpath) == [CONF, Path("/a"), Path("/c"), Path("/e")]


@pytest.mark.integration
def test_cli_refuses_a_broken_user_file_in_one_line(tmp_path):
    user_conf = tmp_path / "conf"
    (user_conf / "experiment").mkdir(parents=True)
    (user_conf / "experiment" / "broken.yaml").write_text(BROKEN)
    proc = run_cli(["--config-dir", str(user_conf), "experiment=task3c", "--cfg", "job"], tmp_path, timeout=HANG)
    assert proc.returncode == 1
    assert proc.stderr.strip().splitlines() == [proc.stderr.strip()]  # one line, no traceback
    assert "broken.yaml, line 5, column 1" in proc.stderr


def test_cli_refuses_two_modes_in_one_line(tmp_path):
    """Hydra allows one of -m, --cfg, --info: a hurried `-m ... --cfg job` gets one line saying what works instead."""
    proc = run_cli(["-m", "data=digits", "model.width=4,8", "--cfg", "job"], tmp_path, timeout=HANG)
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == [proc.stderr.strip()]  # one line, no traceback
    assert "Only one of --run, --multirun, --cfg" in proc.stderr and "hydra/launcher=dryrun" in proc.stderr
    assert not (tmp_path / "outputs").exists() or not any((tmp_path / "outputs").rglob("*.db"))
