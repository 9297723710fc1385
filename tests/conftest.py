"""Suite-wide hooks. `make test` runs the suite on one pytest-xdist worker per core (at most 4) with ``--dist loadgroup``: each test file
is one group (its module fixtures are made once, on one worker), and tests/cluster is one group, so the session's
single-node Slurm cluster and PostgreSQL server are started once, by one worker."""
from pathlib import Path

import pytest

TESTS = Path(__file__).resolve().parent


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        relative = Path(item.path).resolve().relative_to(TESTS)
        group = "cluster" if relative.parts[0] == "cluster" else relative.as_posix()
        item.add_marker(pytest.mark.xdist_group(group))
