"""A single-node Slurm cluster for the tests: munged, slurmctld and slurmd started as root without systemd.

The recipe is the one verified in shared/NOTES.md ("Slurm here"), with everything the cluster writes (config, spool,
state, logs, pid files, munge socket) in a temporary directory and its ports picked free, so it never touches another
cluster of the machine. The config reaches every Slurm command through ``SLURM_CONF`` in ``env``; sbatch passes the
environment on to the jobs. Each daemon runs in its own session (``start_new_session``) and is stopped by its process
group id, never by name.

Accounting: there is no slurmdbd (it needs MySQL/MariaDB), so ``sacct`` fails and submitit logs "Bypassing sacct error"
on every poll; it then reads a job's end from the result file the job writes (``SlurmCluster.sacct_warning`` names the
message, which tests filter out of what they check). ``squeue`` and ``scontrol`` work as usual.
"""
from __future__ import annotations

import os
import pwd
import shutil
import signal
import socket
import subprocess
from pathlib import Path

from ..handshake import HANG, wait_for
from ..servers import free_port, stop_group

DAEMONS = ("munged", "slurmctld", "slurmd")
SBIN = Path("/usr/sbin")
MUNGE_KEY = Path("/etc/munge/munge.key")


def unavailable_reason() -> str | None:
    """Why a Slurm cluster cannot be started here, or None."""
    missing = [d for d in DAEMONS if shutil.which(d) is None and not (SBIN / d).exists()]
    if missing:
        return (f"Slurm is not installed ({', '.join(missing)} missing): .ci/setup-slurm.sh installs Debian's "
                "slurm-wlm and munge as root")
    if os.geteuid() != 0:
        return "starting slurmd needs root (it runs the jobs as their users); CI runs as root"
    if not MUNGE_KEY.exists():
        return f"{MUNGE_KEY} is missing (the munge package creates it)"
    try:
        pwd.getpwnam("munge")
    except KeyError:
        return "there is no munge user (the munge package creates it)"
    return None


def _daemon(name: str) -> str:
    return shutil.which(name) or str(SBIN / name)


def _node_line() -> tuple[str, str]:
    """(NodeName, "CPUs=... RealMemory=...") as ``slurmd -C`` reports them: declaring more drains the node."""
    out = subprocess.run([_daemon("slurmd"), "-C"], capture_output=True, text=True, check=True).stdout
    fields = dict(item.split("=", 1) for item in out.split() if "=" in item)
    return fields["NodeName"], f"CPUs={fields['CPUs']} RealMemory={fields['RealMemory']}"


class SlurmCluster:
    sacct_warning = "Bypassing sacct error"

    def __init__(self, root: Path):
        self.root = root
        self.host = socket.gethostname().split(".")[0]  # `hostname -s`
        self.conf = root / "slurm.conf"
        self.munge_socket = root / "munge" / "munge.socket"
        self.processes: dict[str, subprocess.Popen] = {}
        self.env = {**os.environ, "SLURM_CONF": str(self.conf)}

    def write_config(self) -> None:
        node, resources = _node_line()
        if node != self.host:
            raise RuntimeError(f"slurmd -C names the node {node!r} but hostname -s is {self.host!r}")
        for sub in ("spool/ctld", "spool/d", "log"):
            (self.root / sub).mkdir(parents=True, exist_ok=True)
        self.conf.write_text("\n".join([
            "ClusterName=ci", f"SlurmctldHost={self.host}", "SlurmUser=root", "SlurmdUser=root",
            f"SlurmctldPort={free_port()}", f"SlurmdPort={free_port()}",
            "AuthType=auth/munge", "CredType=cred/munge", f"AuthInfo=socket={self.munge_socket},cred_expire=10",
            "ProctrackType=proctrack/linuxproc", "TaskPlugin=task/none", "JobAcctGatherType=jobacct_gather/none",
            "SelectType=select/cons_tres", "SelectTypeParameters=CR_Core_Memory", "MpiDefault=none",
            f"StateSaveLocation={self.root / 'spool/ctld'}", f"SlurmdSpoolDir={self.root / 'spool/d'}",
            f"SlurmctldPidFile={self.root / 'slurmctld.pid'}", f"SlurmdPidFile={self.root / 'slurmd.pid'}",
            f"SlurmctldLogFile={self.root / 'log/slurmctld.log'}", f"SlurmdLogFile={self.root / 'log/slurmd.log'}",
            "ReturnToService=2", "SchedulerParameters=sched_interval=1", "KillWait=30", "MinJobAge=600",
            "JobRequeue=1",
            f"NodeName={self.host} {resources} State=UNKNOWN",
            "PartitionName=cpu Nodes=ALL Default=YES MaxTime=INFINITE State=UP",
            "",
        ]))

    def _start(self, name: str, args: list[str], user: str | None = None) -> None:
        log = open(self.root / "log" / f"{name}.out", "ab")
        cmd = [_daemon(name), *args]
        if user is not None:  # munged refuses to run as root
            cmd = ["runuser", "-u", user, "--", *cmd]
        self.processes[name] = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                                env=self.env, start_new_session=True)
        log.close()

    def start(self) -> "SlurmCluster":
        self.root.chmod(0o755)  # munged, running as user munge, must reach its socket dir
        self.write_config()
        munge_dir = self.munge_socket.parent
        munge_dir.mkdir(exist_ok=True)
        shutil.chown(munge_dir, "munge", "munge")
        self._start("munged", ["--foreground", f"--socket={self.munge_socket}", f"--key-file={MUNGE_KEY}",
                               f"--pid-file={munge_dir / 'munged.pid'}", f"--log-file={munge_dir / 'munged.log'}",
                               f"--seed-file={munge_dir / 'munged.seed'}"], user="munge")
        wait_for(self.munge_socket.exists, "munged's socket", proc=self.processes["munged"])
        self._start("slurmctld", ["-D", "-i"])
        wait_for(lambda: self._run("scontrol", "ping").returncode == 0 or self._dead(), "slurmctld answering ping")
        self._start("slurmd", ["-D"])
        wait_for(lambda: self.node_state().startswith("IDLE") or self._dead(), "an idle node")
        dead = self._dead()
        if dead:
            raise RuntimeError(f"{dead} exited during start-up; see {self.root / 'log'}")
        return self

    def _dead(self) -> str | None:
        return next((name for name, proc in self.processes.items() if proc.poll() is not None), None)

    def _run(self, *cmd: str) -> subprocess.CompletedProcess:
        return subprocess.run(list(cmd), capture_output=True, text=True, env=self.env, timeout=HANG)

    def node_state(self) -> str:
        out = self._run("sinfo", "-h", "-N", "-o", "%T").stdout.strip()
        return out.upper()

    def squeue(self) -> list[tuple[str, str]]:
        """(job id as %i, state) of every job in the queue."""
        out = self._run("squeue", "-h", "-o", "%i %T").stdout
        return [tuple(line.split()) for line in out.splitlines() if line.strip()]

    def scontrol(self, *args: str) -> str:
        result = self._run("scontrol", *args)
        if result.returncode:
            raise RuntimeError(f"scontrol {' '.join(args)} failed: {result.stderr.strip()}")
        return result.stdout

    def cancel_all(self) -> None:
        """Cancel every job of this cluster (the test's own: the cluster is private to the session) and wait until the
        queue is empty, so that no job outlives the daemons."""
        if not self.processes or self._dead():
            return
        def cancelled() -> bool:  # again at every look: a job being requeued when the first came is pending again
            self._run("scancel", "--full", "--user", str(os.geteuid()))
            return not self.squeue()

        wait_for(cancelled, "an empty Slurm queue after scancel", poll=1.0)

    def stop(self, timeout: float = 30.0) -> None:
        """SIGTERM to each daemon's process group in reverse start order, SIGKILL to what is left after ``timeout``."""
        for name in reversed(list(self.processes)):
            stop_group(self.processes[name], signal.SIGTERM, timeout)
        self.processes.clear()

    def logs(self) -> str:
        """The tail of each daemon's log, for a failing assertion's message."""
        tails = []
        for path in sorted((self.root / "log").glob("*.log")):
            tails.append(f"--- {path.name}\n" + "\n".join(path.read_text(errors="replace").splitlines()[-20:]))
        return "\n".join(tails)
