"""Where things live: the repository, its conf/ tree, the outputs directory, and the commit the code runs from."""
from __future__ import annotations

import os
import subprocess
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
CONF_DIR = REPO_ROOT / "conf"


def outputs_dir() -> Path:
    """<repo>/outputs, from the package location (never the cwd); $MLP_SWEEPS_OUTPUTS overrides it."""
    env = os.environ.get("MLP_SWEEPS_OUTPUTS")
    return Path(env).expanduser().resolve() if env else REPO_ROOT / "outputs"


def unwritable_reason(path: Path) -> str | None:
    """Why no directory can be made at ``path`` (its nearest existing ancestor is a file or not writable), or None."""
    existing = path
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if not existing.is_dir():
        return f"{existing} is not a directory"
    if not os.access(existing, os.W_OK | os.X_OK):
        return f"{existing} is not writable"
    return None


def git_commit() -> tuple[str | None, bool]:
    """(commit of the repo the package runs from, dirty?) or (None, False) outside a git checkout."""
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=REPO_ROOT, capture_output=True, text=True, timeout=5, check=True
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"], cwd=REPO_ROOT, capture_output=True, text=True,
            timeout=5,
        ).stdout.strip()
        return commit or None, bool(dirty)
    except (OSError, subprocess.SubprocessError):
        return None, False
