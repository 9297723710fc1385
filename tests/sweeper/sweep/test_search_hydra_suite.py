"""Hydra's own test suite for sweepers that launch in batches, run against the search sweeper: a pure grid space
(group1=file1,file2 bar=100,200,300) with n_trials=6 and n_jobs=2 must run as 3 batches of 2 jobs in grid order,
exactly as Hydra's plugins are checked."""
from __future__ import annotations

import pytest
from hydra.test_utils.launcher_common_tests import BatchedSweeperTestSuite


@pytest.fixture(autouse=True)
def _study_in_tmp(tmp_path, monkeypatch):
    """The study's journal goes to <outputs>/studies: keep it in the test's own directory."""
    monkeypatch.setenv("MLP_SWEEPS_OUTPUTS", str(tmp_path / "outputs"))


@pytest.mark.parametrize("launcher_name, overrides",
                         [("basic", ["hydra/sweeper=random", "hydra.sweeper.n_trials=6", "hydra.sweeper.n_jobs=2",
                                     "hydra.job.chdir=True"])])
class TestSearchSweeperAsABatchedSweeper(BatchedSweeperTestSuite):
    pass


def test_hydra_discovers_the_search_sweeper_plugin():
    from hydra.core.plugins import Plugins
    from hydra.plugins.sweeper import Sweeper

    from sweeper.launchers import SweeperKind

    # as Hydra's own plugin tests check it (discovery imports the module afresh, so compare by name)
    discovered = [f"{plugin.__module__}.{plugin.__name__}" for plugin in Plugins.instance().discover(Sweeper)]
    assert SweeperKind.SEARCH.value in discovered
