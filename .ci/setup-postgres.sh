#!/usr/bin/env bash
# PostgreSQL 15 for the team-store test (tests/cluster/test_postgres.py), which runs its own throw-away server with
# initdb + postgres in a temporary directory. Preinstalled on the CI machines (cluster stopped); installed here only
# where it is missing. Without root or apt (a developer's laptop), this does nothing and the test skips, saying why.
set -euo pipefail
if [ -x /usr/lib/postgresql/15/bin/initdb ]; then
    exit 0
fi
if [ "$(id -u)" != 0 ] || ! command -v apt-get >/dev/null; then
    echo "setup-postgres: not root or no apt-get; the PostgreSQL test will skip" >&2
    exit 0
fi
export DEBIAN_FRONTEND=noninteractive
[ -n "${MLP_SWEEPS_APT_UPDATED:-}" ] || apt-get -o DPkg::Lock::Timeout=900 update -q
apt-get -o DPkg::Lock::Timeout=900 install -y -q --no-install-recommends postgresql-15
