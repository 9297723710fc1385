"""The house rules of sweeper/, checked on the source: one-way imports between layers, one home for names, MLflow
internals and launcher identity, small modules, plugins discovered by Hydra, and a CLI that imports heavy packages only
where a command needs them."""
from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

from sweeper import names

from ..handshake import HANG

REPO = Path(__file__).resolve().parents[2]
SWEEPER = REPO / "sweeper"
MODULES = sorted(SWEEPER.rglob("*.py"))
PLUGINS = sorted((REPO / "hydra_plugins").rglob("*.py"))
MAX_LINES = 400


def module_name(path: Path, root: Path = REPO) -> str:
    parts = path.relative_to(root).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imported_modules(path: Path, root: Path = REPO) -> set[str]:
    """Every module ``path`` imports, at any depth of the file (function-level imports included), resolved."""
    name = module_name(path, root)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(anchor + ([base] if base else []))
            found.add(base)
            found.update(f"{base}.{alias.name}" for alias in node.names)  # `from . import names` imports a module
    return found


def sweeper_graph() -> dict[str, set[str]]:
    known = {module_name(p) for p in MODULES}
    return {module_name(p): {m for m in imported_modules(p) if m in known and m != module_name(p)} for p in MODULES}


def test_no_import_cycle_inside_sweeper():
    graph = sweeper_graph()
    # a package's __init__ is imported with any of its modules: count only what the modules themselves import
    state: dict[str, int] = {}

    def visit(node: str, stack: list[str]) -> None:
        state[node] = 1
        for child in graph[node]:
            if state.get(child) == 1:
                cycle = stack[stack.index(child):] + [child] if child in stack else [node, child]
                pytest.fail("import cycle: " + " -> ".join(cycle))
            if child not in state:
                visit(child, stack + [child])
        state[node] = 2

    for module in graph:
        if module not in state:
            visit(module, [module])


def test_the_cycle_check_finds_a_cycle(tmp_path):
    """The checker itself: a function-level import back into the importer is a cycle."""
    (tmp_path / "a.py").write_text("import b\n")
    (tmp_path / "b.py").write_text("def f():\n    import a\n")
    assert "a" in imported_modules(tmp_path / "b.py", tmp_path) and "b" in imported_modules(tmp_path / "a.py", tmp_path)


# From the top: a module imports from its own layer and the layers below it, never from a layer above.
LAYERS = (
    ("entry", ("sweeper.app", "sweeper.__main__", "hydra_plugins")),
    ("sweep", ("sweeper.sweep",)),
    ("lifecycle/job", ("sweeper.lifecycle", "sweeper.job")),
    ("reporting", ("sweeper.reporting",)),
    ("config/tracking", ("sweeper.config", "sweeper.tracking")),
    ("low-level", ("sweeper", "sweeper.names", "sweeper.paths", "sweeper.redact", "sweeper.signals",
                   "sweeper.handoff", "sweeper.launchers")),
    ("mlp_core", ("mlp_core",)),
)


def layer_of(module: str) -> int | None:
    """The index in LAYERS of a module (the longest matching prefix decides), or None for one outside the project."""
    matches = [(len(prefix), index) for index, (_, prefixes) in enumerate(LAYERS) for prefix in prefixes
               if module == prefix or module.startswith(prefix + ".")]
    return max(matches)[1] if matches else None


def upward_imports(paths: list[Path], root: Path = REPO) -> list[str]:
    """Every import (function-level ones included) of a module from a layer above its own."""
    found = []
    for path in paths:
        name = module_name(path, root)
        for imported in sorted(imported_modules(path, root)):
            own, other = layer_of(name), layer_of(imported)
            if own is not None and other is not None and other < own:
                found.append(f"{name} ({LAYERS[own][0]}) imports {imported} ({LAYERS[other][0]})")
    return found


def test_every_module_imports_only_from_its_own_layer_and_below():
    project = MODULES + PLUGINS + sorted((REPO / "mlp_core").rglob("*.py"))
    assert [module_name(p) for p in project if layer_of(module_name(p)) is None] == []  # every module has a layer
    assert upward_imports(project) == []


def test_the_layer_check_finds_a_function_level_import_upwards(tmp_path):
    """The checker itself: a job-level module that imports the entry point inside a function breaks the layers."""
    (tmp_path / "sweeper").mkdir()
    (tmp_path / "sweeper" / "job.py").write_text("def f():\n    from . import app\n")
    (tmp_path / "sweeper" / "app.py").write_text("from . import job\n")
    assert upward_imports(sorted((tmp_path / "sweeper").glob("*.py")), tmp_path) == [
        "sweeper.job (lifecycle/job) imports sweeper.app (entry)"]


def test_only_the_launchers_module_reads_which_launcher_or_sweeper_runs():
    """Everything else asks ``sweeper.launchers``: no other module reads a ``_target_`` or spells a plugin's target."""
    found = []
    for path in MODULES + PLUGINS:
        if path.name == "launchers.py":
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if not (isinstance(node, ast.Constant) and isinstance(node.value, str)):
                continue
            reads_target = node.value == "_target_" and path in MODULES
            if reads_target or node.value.startswith(("hydra_plugins.", "hydra._internal.")):
                found.append(f"{path.relative_to(REPO)}:{node.lineno}: {node.value!r}")
    assert found == []


def test_nothing_in_sweeper_imports_the_plugins():
    offenders = [module_name(p) for p in MODULES if any(m.startswith("hydra_plugins") for m in imported_modules(p))]
    assert offenders == []


def contract_literals() -> set[str]:
    """The names of the MLflow contract that no other module may spell out."""
    generic = {names.NAME_PARAM, names.EPOCHS, names.STEPS, names.ERROR, names.EXPERIMENT, names.SOURCE_NAME_VALUE,
               names.SEED_PARAM, names.BLAS_THREADS, names.HIDDEN_SIZES_PARAM, names.WIDTH_PARAM,
               names.DEPTH_PARAM}  # plain words, and config keys that are also logged as is
    return {v for k, v in vars(names).items() if k.isupper() and isinstance(v, str)} - generic


def test_metric_and_tag_names_are_literals_in_names_py_only():
    literals = contract_literals()
    found = []
    for path in MODULES + PLUGINS:
        if path.name == "names.py":
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Constant) and node.value in literals:
                found.append(f"{path.relative_to(REPO)}:{node.lineno}: {node.value!r}")
    assert found == []


MLFLOW_INTERNALS = {"_tracking_client", "_get_run", "_check_run_is_active", "_update_latest_metrics_if_necessary",
                    "ManagedSessionMaker", "sanitize_metric_value", "SqlMetric", "SqlAlchemyStore"}


def test_only_the_mlflow_private_package_touches_mlflow_internals():
    found = []
    for path in MODULES:
        if "mlflow_private" in path.relative_to(REPO).parts:
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            private_import = (isinstance(node, ast.ImportFrom) and (node.module or "").startswith("mlflow")
                              and (any(a.name.startswith("_") for a in node.names) or ".store." in node.module + "."
                                   or "._" in node.module))
            attribute = isinstance(node, ast.Attribute) and node.attr in MLFLOW_INTERNALS
            if private_import or attribute or (isinstance(node, ast.Name) and node.id in MLFLOW_INTERNALS):
                found.append(f"{path.relative_to(REPO)}:{node.lineno}")
    assert found == []
    from sweeper.tracking import mlflow_private

    assert mlflow_private.VERIFIED_MLFLOW.startswith("3.")
    assert '"mlflow>=3.7,<4"' in (REPO / "pyproject.toml").read_text()  # the upper pin that goes with it


def test_no_module_is_over_400_lines():
    sizes = {str(p.relative_to(REPO)): len(p.read_text().splitlines()) for p in MODULES}
    assert {p: n for p, n in sizes.items() if n > MAX_LINES} == {}


def test_tests_mirror_the_subpackages():
    for package in ("config", "tracking", "sweep", "reporting"):
        assert (SWEEPER / package / "__init__.py").is_file()
        assert list((REPO / "tests" / "sweeper" / package).glob("test_*.py")), package


def test_hydra_discovers_the_dry_run_launcher_plugin():
    from hydra.core.plugins import Plugins
    from hydra.plugins.launcher import Launcher

    from hydra_plugins.mlp_sweeps_dryrun.dryrun_launcher import DryRunLauncher

    # as Hydra's own plugin tests check it (discovery imports the module afresh, so compare by name)
    assert DryRunLauncher.__name__ in [plugin.__name__ for plugin in Plugins.instance().discover(Launcher)]


@pytest.mark.parametrize("args", [["--help"], ["experiment=task3c", "--cfg", "job"]], ids=["help", "cfg-job"])
def test_cli_paths_that_train_nothing_import_no_mlflow_matplotlib_or_sklearn(tmp_path, args):
    code = ("import atexit, sys\n"
            "atexit.register(lambda: print('HEAVY=' + ','.join(m for m in ('mlflow', 'matplotlib', 'sklearn') "
            "if m in sys.modules)))\n"
            f"sys.argv = ['mlp-sweep', *{args!r}]\n"
            "from sweeper.app import main\nmain()\n")
    proc = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, timeout=HANG,
                          env={"MLP_SWEEPS_OUTPUTS": str(tmp_path), "PATH": "/usr/bin:/bin"})
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.strip().splitlines()[-1] == "HEAVY=", proc.stdout[-500:]


def test_schema_is_registered_by_the_entry_point_not_by_importing_it(tmp_path):
    code = ("from hydra.core.config_store import ConfigStore\n"
            "import sweeper.app, sweeper.config.schema\n"
            "print('base_config.yaml' in ConfigStore.instance().repo)\n"
            "sweeper.app.register()\n"
            "print('base_config.yaml' in ConfigStore.instance().repo)\n")
    proc = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, timeout=HANG)
    assert proc.stdout.split() == ["False", "True"], proc.stderr[-2000:]
