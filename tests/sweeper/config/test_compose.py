"""A sweep's jobs are composed once, as the launchers compose them (sweeper.config.compose)."""
from __future__ import annotations

import pytest
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from omegaconf import OmegaConf

from sweeper.config.compose import compose_job

from ..sweeper_helpers import CONF, run_cli


@pytest.fixture
def master():
    """The master config of a multirun and Hydra's global config loader, as the launching process has them."""
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        yield compose("config", overrides=["data=digits"], return_hydra_config=True)
    GlobalHydra.instance().clear()


def test_the_launcher_takes_the_checked_composition_once_then_composes_afresh(master):
    loader = GlobalHydra.instance().config_loader()
    checked = compose_job(master, ["model.width=8"])
    assert checked.model.width == 8
    assert loader.load_sweep_config(master, ["model.width=16"]).model.width == 16  # another job: composed
    assert loader.load_sweep_config(master, ["model.width=8"]) is checked  # the checked job: not composed again
    again = loader.load_sweep_config(master, ["model.width=8"])  # handed out once: a second request composes
    assert again is not checked
    assert OmegaConf.to_container(again, resolve=False) == OmegaConf.to_container(checked, resolve=False)


def test_a_sweep_file_on_the_users_searchpath_passes_the_grid_check(tmp_path):
    sweeps = tmp_path / "myconf" / "sweep"
    sweeps.mkdir(parents=True)
    (sweeps / "mine.yaml").write_text("# @package _global_\nsweep_name: mine\n"
                                      "hydra:\n  sweeper:\n    params:\n      model.width: 4,6\n")
    proc = run_cli(["-m", "+sweep=mine", "data=digits", "trainer.epochs=1", "tracking.enabled=false",
                    f"hydra.searchpath=[file://{tmp_path / 'myconf'}]"], tmp_path)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "sweep progress: 2/2 done" in proc.stdout + proc.stderr


def test_a_search_over_an_experiment_on_the_users_searchpath_passes_the_space_check(tmp_path):
    experiments = tmp_path / "myconf" / "experiment"
    experiments.mkdir(parents=True)
    (experiments / "mine.yaml").write_text("# @package _global_\nname: mine\ndata:\n  name: digits\n  split: default\n"
                                           "model:\n  width: 6\n")
    proc = run_cli(["-m", "hydra/sweeper=random", "hydra.sweeper.n_trials=2", "optimizer.lr=interval(0.01,0.1)",
                    "experiment=mine", "trainer.epochs=1", "tracking.enabled=false",
                    f"hydra.searchpath=[file://{tmp_path / 'myconf'}]"], tmp_path)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "sweep progress: 2/2 done" in proc.stdout + proc.stderr
