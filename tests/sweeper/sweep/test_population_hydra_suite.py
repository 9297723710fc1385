"""Hydra's own launcher test suites (what its joblib and submitit plugins run) against hydra/launcher=population: with
task functions that are not mlp-sweep jobs, every job runs solo through Hydra's run_job, as with the basic launcher."""
import pytest
from hydra.test_utils.launcher_common_tests import IntegrationTestSuite, LauncherTestSuite


# hydra.job.chdir=True: the suite checks each job's log in its working dir, as under version_base=None (its basic
# launcher fails here the same way without it)
@pytest.mark.parametrize("launcher_name, overrides", [("population", ["hydra.job.chdir=True"])])
class TestPopulationLauncher(LauncherTestSuite):
    pass


@pytest.mark.slow
@pytest.mark.integration
@pytest.mark.parametrize(
    "task_launcher_cfg, extra_flags",
    [({"defaults": [{"override hydra/launcher": "population"}, "_self_"]}, ["-m"])],
)
class TestPopulationLauncherIntegration(IntegrationTestSuite):
    pass
