"""The examples of README.md work as copied.

YAML: each is written where its first comment says, into a --config-dir, and the command that comment names runs
(without training: --cfg job, or the dry-run launcher for a sweep). Shell: every line of a ```bash block that does
not train or need a server (`--cfg`, `--info`, `--help`, `-sc`, the dry-run launcher) runs as written in bash, with
the console scripts of this environment on PATH and `--config-dir` pointing at a copy of conf/ holding the YAML
examples, so a sweep or experiment the README adds by example is there."""
from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys

import pytest

from ...handshake import HANG
from ..sweeper_helpers import CONF, REPO, run_cli

EXAMPLE = re.compile(r"```yaml\n(.*?)```", re.S)
TARGET = re.compile(r"^# conf/(\S+\.yaml)\s+→\s+(mlp-sweep .+)$", re.M)


def readme_examples() -> list[tuple[str, str, str]]:
    """(path under conf/, the command, the YAML text) of every YAML example in README.md."""
    examples = []
    for text in EXAMPLE.findall((REPO / "README.md").read_text()):
        target = TARGET.search(text)
        assert target, f"a README YAML example names no conf/ path and command:\n{text}"
        examples.append((target.group(1), target.group(2), text))
    return examples


def test_the_readme_has_yaml_examples_with_the_package_header_first():
    examples = readme_examples()
    assert len(examples) >= 2
    for path, _, text in examples:
        assert text.startswith("# @package _global_\n"), f"{path}: Hydra reads the header only on the first line"


@pytest.mark.integration
@pytest.mark.parametrize("path, command, text", readme_examples(), ids=[e[0] for e in readme_examples()])
def test_a_readme_yaml_example_works_as_copied(tmp_path, path, command, text):
    conf = tmp_path / "conf"
    (conf / path).parent.mkdir(parents=True)
    (conf / path).write_text(text)
    args = command.split()[1:]
    args += ["hydra/launcher=dryrun"] if "-m" in args else ["--cfg", "job"]
    proc = run_cli(["--config-dir", str(conf), *args], tmp_path, timeout=HANG)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "Traceback" not in proc.stderr
    name = path.rsplit("/", 1)[-1].removesuffix(".yaml")
    assert f"name: {name}" in proc.stdout or f"+sweep={name}" in proc.stdout, proc.stdout[-2000:]


SHELL_BLOCK = re.compile(r"```bash\n(.*?)```", re.S)
# what makes a command line safe to run here: it composes, prints or checks, and never trains
NON_TRAINING = ("--cfg", "--info", "--help", "-sc", "hydra/launcher=dryrun")


def readme_shell_lines() -> list[str]:
    """Every command of the README's bash blocks, continuation lines joined, comment-only lines dropped."""
    lines = []
    for block in SHELL_BLOCK.findall((REPO / "README.md").read_text()):
        for line in block.replace("\\\n", " ").splitlines():
            if line.strip() and not line.lstrip().startswith("#"):
                lines.append(line.strip())
    return lines


def runs_without_training(line: str) -> bool:
    code = re.split(r"\s+#", line, maxsplit=1)[0]  # the command without its trailing comment
    words = re.split(r"[\s\"$()]+", code)
    return "mlp-sweep" in words and any(w in NON_TRAINING for w in words) and (
        "-m" not in words or "hydra/launcher=dryrun" in words)


RUNNABLE = [line for line in readme_shell_lines() if runs_without_training(line)]


def test_the_readme_shows_the_documented_inspection_commands():
    joined = "\n".join(RUNNABLE)
    for needed in ("--cfg job", "--info defaults-tree", "--cfg hydra", "-sc install=bash", "hydra/launcher=dryrun",
                   "--help"):
        assert needed in joined, f"no runnable README example uses {needed}"


@pytest.fixture(scope="module")
def example_conf(tmp_path_factory):
    """A copy of conf/ with the README's YAML examples written where they say."""
    conf = tmp_path_factory.mktemp("readme") / "conf"
    shutil.copytree(CONF, conf)
    for path, _, text in readme_examples():
        (conf / path).parent.mkdir(parents=True, exist_ok=True)
        (conf / path).write_text(text)
    return conf


@pytest.mark.integration
@pytest.mark.parametrize("line", RUNNABLE)
def test_a_readme_shell_example_runs_as_written(tmp_path, example_conf, line):
    bin_dir = os.path.dirname(sys.executable)
    assert os.access(os.path.join(bin_dir, "mlp-sweep"), os.X_OK), "mlp-sweep is not installed next to python"
    command = re.sub(r"\bmlp-sweep(?= )", f"mlp-sweep --config-dir {example_conf}", line)
    if "-sc install=bash" in line:  # the completion is installed: bash knows how to complete mlp-sweep
        command += "\ncomplete -p mlp-sweep"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MLFLOW_", "HYDRA_"))}
    env.update(PATH=f"{bin_dir}{os.pathsep}{env.get('PATH', '')}", MLP_SWEEPS_OUTPUTS=str(tmp_path / "outputs"))
    proc = subprocess.run(["bash", "-e", "-o", "pipefail", "-c", command], cwd=tmp_path, env=env, capture_output=True,
                          text=True, timeout=HANG)
    assert proc.returncode == 0, f"{line}\n{proc.stdout[-2000:]}\n{proc.stderr[-3000:]}"
    assert "Traceback" not in proc.stderr, proc.stderr[-3000:]
    assert proc.stdout.strip(), f"{line} printed nothing"
    assert not (tmp_path / "outputs" / "mlflow.db").exists(), f"{line} created a tracking store"
