"""A sweep's jobs are composed once, as the launchers compose them (sweeper.config.compose)."""
from __future__ import annotations

import copy
import os
import subprocess
import sys

import pytest
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from omegaconf import OmegaConf, open_dict

from hydra._internal.config_loader_impl import ConfigLoaderImpl

from sweeper.config.compose import compose_job

from ..sweeper_helpers import CONF, HANG, run_cli


@pytest.fixture
def master():
    """The master config of a multirun and Hydra's global config loader, as the launching process has them."""
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        yield compose("config", overrides=["data=digits"], return_hydra_config=True)
    GlobalHydra.instance().clear()


def test_the_sweeper_gets_a_copy_the_launcher_the_checked_composition_then_it_is_composed_afresh(master):
    loader = GlobalHydra.instance().config_loader()
    checked = compose_job(master, ["model.width=8"])
    assert checked.model.width == 8
    assert loader.load_sweep_config(master, ["model.width=16"]).model.width == 16  # another job: composed
    validated = loader.load_sweep_config(master, ["model.width=8"])  # the sweeper's check of the batch: a copy
    assert validated is not checked
    assert OmegaConf.to_container(validated, resolve=False) == OmegaConf.to_container(checked, resolve=False)
    validated.model.width = 99  # the copy is its owner's: editing it leaves the launcher's config alone
    assert loader.load_sweep_config(master, ["model.width=8"]) is checked  # the launcher's: not composed again
    assert checked.model.width == 8
    again = loader.load_sweep_config(master, ["model.width=8"])  # handed out twice: a third request composes
    assert again is not checked
    assert OmegaConf.to_container(again, resolve=False) == OmegaConf.to_container(checked, resolve=False)


def test_a_search_trials_checked_composition_serves_its_launchers_one_request(master):
    loader = GlobalHydra.instance().config_loader()
    checked = compose_job(master, ["model.width=8"], requests=1)  # the search sweeper's batch check
    assert loader.load_sweep_config(master, ["model.width=8"]) is checked  # the launcher's: not composed again
    again = loader.load_sweep_config(master, ["model.width=8"])  # served once: the next request composes
    assert again is not checked
    assert OmegaConf.to_container(again, resolve=False) == OmegaConf.to_container(checked, resolve=False)


# Every kind of override a job can carry, each list composed by Hydra and by the template path: same config, same
# hydra node, same flags; or the same error. Lists that share a template follow each other (the second is the copy).
JOBS = [
    ["model.width=8"], ["model.width=16"],
    ["experiment=task3c", "trainer.seed=3"], ["experiment=task3c", "trainer.seed=4", "trainer.lr=0.5"],
    ["experiment=task4b", "trainer.seed=3"], ["trainer.seed=3", "experiment=task4b"],
    ["optimizer=sgd", "model.hidden_sizes=[4,5]"], ["optimizer=sgd", "model.hidden_sizes=[6]"],
    ["data=mnist_standard", "++trainer.seed=5"], ["data=mnist_standard", "model.init=xavier"],
    ["hydra.job.name=mine", "model.width=8"], ["hydra.job.name=mine", "model.width=9"],
    ["hydra/launcher=joblib", "model.width=8"], ["hydra.job.env_set.ABC=1", "model.width=8"],
    ["model={width: 12, depth: 2}"], ["+model.extra=1"], ["~trainer.seed"], ["model.widht=8"],
    ["experiment=nope"], ["model.width=1,2"], ["model.init=default"], ["trainer.lr=fast"],
]


def hydras(loader, master, overrides):
    """Hydra's own composition of a job, or its error."""
    try:
        return ConfigLoaderImpl.load_sweep_config(loader, master, list(overrides))
    except Exception as exc:  # noqa: BLE001 - compared as type and text
        return (type(exc), str(exc))


def ours(master, overrides):
    try:
        return compose_job(master, overrides, keep=False)
    except Exception as exc:  # noqa: BLE001
        return (type(exc), str(exc))


def described(cfg):
    if isinstance(cfg, tuple):
        return cfg
    app = copy.deepcopy(cfg)
    with open_dict(app):
        del app["hydra"]  # its sweep dirs resolve only once a launcher sets hydra.job.num
    return (OmegaConf.to_yaml(cfg), OmegaConf.is_struct(cfg), OmegaConf.is_readonly(cfg.hydra),
            OmegaConf.to_yaml(app, resolve=True))


def test_each_job_composes_as_hydra_composes_it(master):
    loader = GlobalHydra.instance().config_loader()
    for overrides in JOBS:
        assert described(ours(master, overrides)) == described(hydras(loader, master, overrides)), overrides
    composed = [ours(master, job) for job in JOBS[:2]]
    assert composed[0] is not composed[1] and composed[0].model.width == 8  # each job its own copy


def test_a_job_with_another_searchpath_gets_its_own_template(tmp_path, master):
    """A hydra.searchpath override changes which files a group has: it is part of the template's key."""
    (tmp_path / "experiment").mkdir()
    (tmp_path / "experiment" / "mine.yaml").write_text("# @package _global_\nname: mine\ntrainer:\n  lr: 0.25\n")
    loader = GlobalHydra.instance().config_loader()
    for overrides in (["experiment=task3c"], [f"hydra.searchpath=[file://{tmp_path}]", "experiment=mine"],
                      ["experiment=mine"]):
        assert described(ours(master, overrides)) == described(hydras(loader, master, overrides)), overrides


# Counts the compositions of a job, and the defaults-list merges among them, in a real multirun, then runs the CLI.
COUNTING = """
import atexit, sys
from hydra._internal.config_loader_impl import ConfigLoaderImpl
from sweeper.config import compose
calls, merges = [], []
original, merge = compose._Composed._compose, ConfigLoaderImpl._compose_config_from_defaults_list
def counted(self, master_config, overrides):
    calls.append(tuple(overrides))
    return original(self, master_config, overrides)
def merged(self, *args, **kwargs):
    merges.append(1)
    return merge(self, *args, **kwargs)
compose._Composed._compose, ConfigLoaderImpl._compose_config_from_defaults_list = counted, merged
atexit.register(lambda: sys.__stdout__.write(f"COMPOSED={len(calls)} DISTINCT={len(set(calls))} "
                                             f"MERGED={len(merges)}\\n"))
sys.argv = ["mlp-sweep", *sys.argv[1:]]
from sweeper.app import main
main()
"""


def test_a_basic_sweep_composes_each_job_once(tmp_path):
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MLFLOW_", "HYDRA_"))}
    env["MLP_SWEEPS_OUTPUTS"] = str(tmp_path / "outputs")
    proc = subprocess.run([sys.executable, "-c", COUNTING, "-m", "data=digits", "model.width=4,6,8",
                           "trainer.epochs=1", "tracking.enabled=false"],
                          cwd=tmp_path, env=env, capture_output=True, text=True, timeout=HANG)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "sweep progress: 3/3 done" in proc.stdout + proc.stderr
    # the grid check's; Hydra's batch check and the launcher reuse them. Merged: the master config, twice by Hydra
    # itself (to read the run mode, then for the multirun), and the three jobs' one template
    assert "COMPOSED=3 DISTINCT=3 MERGED=3" in proc.stdout


def test_a_search_composes_each_trial_once(tmp_path):
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MLFLOW_", "HYDRA_"))}
    env["MLP_SWEEPS_OUTPUTS"] = str(tmp_path / "outputs")
    proc = subprocess.run([sys.executable, "-c", COUNTING, "-m", "hydra/sweeper=random", "hydra.sweeper.n_trials=3",
                           "hydra.sweeper.pruner=none", "optimizer.lr=interval(0.01,0.1)", "data=digits",
                           "trainer.epochs=1", "tracking.enabled=false"],
                          cwd=tmp_path, env=env, capture_output=True, text=True, timeout=HANG)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "sweep progress: 3/3 done" in proc.stdout + proc.stderr
    # the space check's two corners (lr at 0.01 and at 0.1), then each trial once, by the batch check: its launcher
    # reuses it. Merged: the master config twice by Hydra itself, and one template for all five
    assert "COMPOSED=5 DISTINCT=5 MERGED=3" in proc.stdout, proc.stdout[-500:]


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
