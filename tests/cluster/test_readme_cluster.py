"""README "Running on a cluster": its commands are the ones the cluster tests run. The `mlp-sweep` line composes with
the slurm preset and every knob it and the text name; the `mlflow server` line uses only the flags and the URI scheme
of tests/servers.py and tests/cluster/postgres.py (test_postgres.py runs them); the extra it installs exists. Nothing
here trains: test_slurm.py and test_postgres.py run the real thing."""
from __future__ import annotations

import re
import shlex

from ..servers import LocalServer
from ..sweeper.sweeper_helpers import REPO, compose_cfg
from .postgres import LocalPostgres


def section() -> str:
    text = (REPO / "README.md").read_text()
    start = text.index("## Running on a cluster")
    end = text.index("\n## ", start + 1)
    return text[start:end]


def commands() -> list[list[str]]:
    """Every command of the section's bash blocks, continuation lines joined, comments dropped."""
    found = []
    for block in re.findall(r"```bash\n(.*?)```", section(), re.S):
        for line in block.replace("\\\n", " ").splitlines():
            if line.strip():
                found.append(shlex.split(line, comments=True))
    return found


def test_the_readme_cluster_commands_are_the_tested_ones():
    cmds = commands()
    sweeps = [c for c in cmds if c[0] == "mlp-sweep"]
    servers = [c for c in cmds if c[:2] == ["mlflow", "server"]]
    assert len(sweeps) == 1 and len(servers) == 1 and any(c[:2] == ["pip", "install"] for c in cmds)

    args = sweeps[0][1:]
    assert args[0] == "-m"
    cfg = compose_cfg(args[1:], return_hydra_config=True)
    launcher = cfg.hydra.launcher
    assert launcher._target_ == "hydra_plugins.hydra_submitit_launcher.submitit_launcher.SlurmLauncher"
    for knob in re.findall(r"`(\w+)`", section().split("The preset's knobs:")[1].split("**Preemption")[0]):
        assert knob in launcher, f"README names the slurm knob {knob!r}, which the preset does not have"
    for arg in args:
        if arg.startswith("hydra.launcher."):
            key, value = arg[len("hydra.launcher."):].split("=")
            assert str(launcher[key]) == value

    server = servers[0]
    tested = LocalServer("postgresql+psycopg://x", artifacts_destination="/a").command()
    assert {a for a in server if a.startswith("--")} <= {a for a in tested if a.startswith("--")}
    backend = server[server.index("--backend-store-uri") + 1]
    assert backend.startswith("postgresql+psycopg://") and LocalPostgres(REPO).uri.startswith("postgresql+psycopg://")

    pip = next(c for c in cmds if c[:2] == ["pip", "install"])
    extra = re.fullmatch(r"\.\[(\w+)\]", pip[-1]).group(1)
    assert re.search(rf'^{extra} = \[.*"psycopg', (REPO / "pyproject.toml").read_text(), re.M)

    exported = {c[1].split("=")[0] for c in cmds if c[0] == "export"} | {
        c[2].split("=")[0] for c in cmds if c[0] == "export" and len(c) > 2}
    sources = "".join(p.read_text() for p in (REPO / "sweeper").rglob("*.py"))
    for variable in exported:
        assert f'"{variable}"' in sources, f"README exports {variable}, which the app never reads"
