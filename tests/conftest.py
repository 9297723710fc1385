"""Suite-wide hooks. `make test` runs the suite on pytest-xdist workers (one per core, at most 4) with ``--dist
loadgroup``: each test file is one group (its module fixtures are made once, on one worker), except that every test
that uses the session's single-node Slurm cluster (the ``slurm_cluster`` fixture, tests/cluster) is in one group, so
that the cluster is started once, by one worker."""
from pathlib import Path

import pytest

TESTS = Path(__file__).resolve().parent


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        if "slurm_cluster" in getattr(item, "fixturenames", ()):
            group = "slurm"
        else:
            group = Path(item.path).resolve().relative_to(TESTS).as_posix()
        item.add_marker(pytest.mark.xdist_group(group))
