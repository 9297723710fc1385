"""The YAML examples of README.md work as copied: each is written where its first comment says, into a --config-dir,
and the command that comment names runs (without training: --cfg job, or the dry-run launcher for a sweep)."""
from __future__ import annotations

import re

import pytest

from ...handshake import HANG
from ..sweeper_helpers import REPO, run_cli

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
