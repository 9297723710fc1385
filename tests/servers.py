"""Servers the tests (and benchmarks/bench_store.py) start: a free local port and ``mlflow server`` in its own process
group, stopped by that group's id."""
from __future__ import annotations

import logging
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)


def stop_group(proc: subprocess.Popen, first: int = signal.SIGTERM, timeout: float = 15.0) -> None:
    """``first`` to the process group of ``proc`` (started with start_new_session, so its pgid is its pid), then
    SIGKILL to whatever is left of the group after ``timeout`` (children may outlive the leader), and reap it."""
    if proc.poll() is None:
        try:
            os.killpg(proc.pid, first)
            proc.wait(timeout=timeout)
        except (ProcessLookupError, subprocess.TimeoutExpired):
            pass
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass
    proc.wait(timeout=timeout)


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return sock.getsockname()[1]


class LocalServer:
    """``mlflow server`` on 127.0.0.1 for the duration of a ``with`` block (own process group, killed on exit).

    ``backend_store_uri`` should already exist and be migrated (create it in the launching process first).
    """

    def __init__(self, backend_store_uri: str, artifacts_destination: str | None = None, port: int | None = None,
                 host: str = "127.0.0.1", workers: int = 1, startup_timeout: float = 90.0,
                 log_path: str | os.PathLike | None = None):
        self.backend_store_uri = backend_store_uri
        self.artifacts_destination = artifacts_destination
        self.host = host
        self.port = port or free_port(host)
        self.workers = workers
        self.startup_timeout = startup_timeout
        self.log_path = Path(log_path) if log_path else None
        self.process: subprocess.Popen | None = None
        self.startup_seconds: float | None = None
        self._log_file: Any = None

    @property
    def uri(self) -> str:
        return f"http://{self.host}:{self.port}"

    def command(self) -> list[str]:
        cmd = [sys.executable, "-m", "mlflow", "server", "--backend-store-uri", self.backend_store_uri,
               "--host", self.host, "--port", str(self.port), "--workers", str(self.workers)]
        if self.artifacts_destination:
            cmd += ["--artifacts-destination", self.artifacts_destination]
        return cmd

    def start(self) -> "LocalServer":
        import requests

        if self.log_path:
            self._log_file = open(self.log_path, "ab")
        out = self._log_file or subprocess.DEVNULL
        start = time.monotonic()
        # without MLflow's GenAI job runner (7 more processes that only compete for the cores while the server starts;
        # the tool never submits GenAI jobs), as `make ui` runs it
        env = {**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}
        self.process = subprocess.Popen(self.command(), stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                        start_new_session=True, env=env)
        deadline = start + self.startup_timeout
        while True:
            if self.process.poll() is not None:
                self.stop()
                raise RuntimeError(f"mlflow server exited with code {self.process.returncode} during startup"
                                   + (f"; see {self.log_path}" if self.log_path else ""))
            try:
                if requests.get(self.uri + "/health", timeout=2).status_code == 200:
                    break
            except requests.RequestException:
                pass
            if time.monotonic() > deadline:
                self.stop()
                hint = f"; see {self.log_path}" if self.log_path else ""
                raise RuntimeError(f"mlflow server on {self.uri} did not answer GET /health within "
                                   f"{self.startup_timeout:.0f} s{hint}")
            time.sleep(0.2)
        self.startup_seconds = time.monotonic() - start
        log.info("mlflow server ready on %s after %.1f s", self.uri, self.startup_seconds)
        return self

    def stop(self, timeout: float = 15.0) -> None:
        """SIGTERM to the server's whole process group, SIGKILL after ``timeout``."""
        if self.process is not None:
            stop_group(self.process, signal.SIGTERM, timeout)
        if self._log_file is not None:
            self._log_file.close()
            self._log_file = None

    def __enter__(self) -> "LocalServer":
        return self.start()

    def __exit__(self, *exc_info: Any) -> None:
        self.stop()
