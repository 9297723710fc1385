"""A throw-away PostgreSQL 15 server for the team-store test: ``initdb`` into a temporary directory and ``postgres``
in its own process group on a free port of 127.0.0.1, stopped by that group's id (SIGINT: PostgreSQL's fast shutdown).

The recipe is the one verified in shared/NOTES.md ("PostgreSQL 15"): as root, the server runs as user postgres.
"""
from __future__ import annotations

import os
import pwd
import shutil
import signal
import subprocess
from pathlib import Path

from ..handshake import HANG, wait_for
from ..servers import free_port, stop_group

BIN = Path("/usr/lib/postgresql/15/bin")


def unavailable_reason() -> str | None:
    """Why a PostgreSQL server cannot be started here, or None."""
    if not (BIN / "initdb").exists():
        return f"PostgreSQL 15 is not installed ({BIN / 'initdb'} missing; Debian: apt-get install postgresql-15)"
    if os.geteuid() == 0:
        try:
            pwd.getpwnam("postgres")
        except KeyError:
            return "running as root but there is no postgres user to run the server as"
    try:
        import psycopg  # noqa: F401
    except ImportError:
        return "the PostgreSQL driver psycopg is not installed: pip install -e .[postgres]"
    return None


class LocalPostgres:
    def __init__(self, root: Path):
        self.root = root
        self.data = root / "data"
        self.port = free_port()
        self.process: subprocess.Popen | None = None

    @property
    def uri(self) -> str:
        return f"postgresql+psycopg://postgres@127.0.0.1:{self.port}/mlflow"

    def _as_owner(self, cmd: list[str]) -> list[str]:
        return ["runuser", "-u", "postgres", "--", *cmd] if os.geteuid() == 0 else cmd

    def start(self) -> "LocalPostgres":
        if os.geteuid() == 0:  # the server refuses to run as root
            self.root.chmod(0o755)
            shutil.chown(self.root, "postgres")
        subprocess.run(self._as_owner([str(BIN / "initdb"), "-D", str(self.data), "-A", "trust", "-U", "postgres"]),
                       check=True, capture_output=True, timeout=HANG)
        log = open(self.root / "postgres.log", "ab")
        self.process = subprocess.Popen(
            self._as_owner([str(BIN / "postgres"), "-D", str(self.data), "-p", str(self.port), "-k", str(self.root),
                            "-c", "listen_addresses=127.0.0.1"]),
            stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True)
        log.close()
        createdb = [str(BIN / "createdb"), "-h", "127.0.0.1", "-p", str(self.port), "-U", "postgres", "mlflow"]
        wait_for(lambda: subprocess.run(createdb, capture_output=True).returncode == 0, "createdb mlflow",
                 proc=self.process, poll=0.3)
        return self

    def stop(self, timeout: float = 30.0) -> None:
        proc = self.process
        if proc is None:
            return
        stop_group(proc, signal.SIGINT, timeout)  # SIGINT: fast shutdown, ends the sessions, then the server
        self.process = None

    def log_tail(self) -> str:
        path = self.root / "postgres.log"
        return path.read_text(errors="replace")[-3000:] if path.exists() else ""
