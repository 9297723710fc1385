#!/usr/bin/env bash
# Debian's chromium, for the browser test of the MLflow UI set-up (tests/sweeper/reporting/test_ui_browser.py drives it
# with the playwright Python package through executable_path; no `playwright install`, which downloads its own build).
set -euo pipefail
if command -v chromium >/dev/null 2>&1; then
    exit 0
fi
export DEBIAN_FRONTEND=noninteractive
[ -n "${MLP_SWEEPS_APT_UPDATED:-}" ] || apt-get -o DPkg::Lock::Timeout=900 update -q
apt-get -o DPkg::Lock::Timeout=900 install -y --no-install-recommends chromium fonts-dejavu-core
