"""Session fixtures of the cluster tests: a real single-node Slurm cluster (tests/cluster/slurm.py)."""
import shutil
import tempfile
from pathlib import Path

import pytest

from .slurm import SlurmCluster, unavailable_reason


@pytest.fixture(scope="session")
def slurm_cluster():
    """munged + slurmctld + slurmd for the whole session; skips, saying why, where Slurm cannot run."""
    reason = unavailable_reason()
    if reason is not None:
        pytest.skip(reason)
    # not pytest's tmp dir: that one is private to root (0700) and munged runs as user munge
    root = Path(tempfile.mkdtemp(prefix="mlp-sweeps-slurm-"))
    cluster = SlurmCluster(root)
    try:
        cluster.start()
        yield cluster
    finally:
        cluster.cancel_all()
        cluster.stop()
        shutil.rmtree(root, ignore_errors=True)
