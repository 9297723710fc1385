#!/usr/bin/env bash
# Debian packages for the real-Slurm test (tests/cluster/): slurm-wlm (slurmctld, slurmd, sbatch, sacct, ...) and munge.
# The test fixture starts a single-node cluster itself (tests/cluster/slurm.py); nothing is started here.
# Without root or apt (a developer's laptop), this does nothing and the Slurm tests skip, saying why.
set -euo pipefail
if command -v slurmctld >/dev/null && command -v slurmd >/dev/null && command -v munged >/dev/null; then
    exit 0
fi
if [ "$(id -u)" != 0 ] || ! command -v apt-get >/dev/null; then
    echo "setup-slurm: not root or no apt-get; the Slurm tests will skip" >&2
    exit 0
fi
export DEBIAN_FRONTEND=noninteractive
[ -n "${MLP_SWEEPS_APT_UPDATED:-}" ] || apt-get -o DPkg::Lock::Timeout=900 update -q
apt-get -o DPkg::Lock::Timeout=900 install -y -q --no-install-recommends slurm-wlm munge
