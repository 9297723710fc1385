"""Security: the offline pickle is hash-checked before a restricted unpickle, config strings are never evaluated,
``_target_`` is refused from overrides, and credentials in the tracking URI never reach output or logs."""
from __future__ import annotations

import ast
import gzip
import hashlib
import pickle
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest

from mlp_core import sources
from mlp_core.sources import DataError
from sweeper.redact import mask_credentials
from tests.core.test_data import (
    _RunsCommand,
    fake_mnist,
    install_fake_checksums,
    make_wheel,
    pickle_tuple_from,
    py2_style_pickle,
)

from .helpers import REPO, cli_env, closed_port, run_cli, tree


@pytest.fixture
def spies(monkeypatch):
    """Record every unpickle of the data layer; plain pickle.load(s) must never be reached from it."""
    calls = []
    real = sources.restricted_loads

    def restricted_loads(data, source="<pickle>"):
        calls.append(source)
        return real(data, source)

    def forbidden(*args, **kwargs):
        raise AssertionError("plain pickle used on offline data")

    monkeypatch.setattr(sources, "restricted_loads", restricted_loads)
    monkeypatch.setattr(sources.pickle, "loads", forbidden)
    monkeypatch.setattr(sources.pickle, "load", forbidden)
    monkeypatch.setattr(sources, "_pip_download", forbidden)
    monkeypatch.setenv(sources.ENV_OFFLINE, "1")
    return calls


@pytest.mark.parametrize("member_kind, pin_hash, expected", [
    ("malicious", False, "sha256 mismatch"),      # never unpickled: the hash is checked first
    ("malicious", True, "refused global"),        # hash matches (a compromised pin): the restricted unpickler refuses
    ("genuine", False, "sha256 mismatch"),        # even a well-formed MNIST pickle is not trusted without the pinned hash
    ("genuine", True, None),                      # the pinned member is unpickled, through the restricted unpickler
])
def test_offline_pickle_is_unpickled_only_after_its_sha256_matches(tmp_path, monkeypatch, spies, member_kind,
                                                                    pin_hash, expected):
    marker = tmp_path / "pwned"
    arrays = fake_mnist(40, 10)
    install_fake_checksums(monkeypatch, arrays)
    if member_kind == "malicious":
        member = gzip.compress(pickle.dumps(_RunsCommand(marker), protocol=2))
    else:
        member = gzip.compress(py2_style_pickle(pickle_tuple_from(arrays, n_valid=8)))  # the real member's layout
    wheel = make_wheel(tmp_path, member)
    if pin_hash:
        monkeypatch.setattr(sources, "OFFLINE_MEMBER_SHA256", hashlib.sha256(member).hexdigest())

    if expected is None:
        assert sources.ensure_mnist(tmp_path, allow_download=False)[1] == f"offline:{sources.OFFLINE_PACKAGE}"
        assert spies == [f"{wheel}!{sources.OFFLINE_MEMBER}"]
    else:
        with pytest.raises(DataError, match=expected):
            sources.ensure_mnist(tmp_path, allow_download=False)
        assert spies == ([f"{wheel}!{sources.OFFLINE_MEMBER}"] if pin_hash else [])
    assert not marker.exists()


def test_restricted_unpickler_rebuilds_arrays_only():
    x = np.arange(6, dtype=np.float32).reshape(2, 3)
    np.testing.assert_array_equal(sources.restricted_loads(pickle.dumps((x, x), protocol=4))[1], x)
    for evil in (_RunsCommand(Path("/nonexistent/pwned")), np.array([1, "a"], dtype=object), Path("/tmp")):
        with pytest.raises(DataError, match="refused"):
            sources.restricted_loads(pickle.dumps(evil, protocol=4))


def _eval_exec_calls(path: Path) -> list[str]:
    found = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Call):
            func = node.func
            if isinstance(func, ast.Name):
                name = func.id
            elif isinstance(func, ast.Attribute) and isinstance(func.value, ast.Name) and func.value.id == "builtins":
                name = func.attr
            else:
                continue  # re.compile, np.errstate, ...: methods, not the builtins
            if name in ("eval", "exec", "compile", "__import__"):
                found.append(f"{path.name}:{node.lineno}: {name}(")
    return found


def test_no_eval_or_exec_in_the_sources():
    files = [p for package in ("sweeper", "mlp_core", "hydra_plugins") for p in (REPO / package).rglob("*.py")]
    assert len(files) > 10
    assert [call for path in files for call in _eval_exec_calls(path)] == []


def test_the_source_scan_would_find_a_call(tmp_path):
    sample = tmp_path / "sample.py"
    sample.write_text("import builtins, re\nx = eval('1')\nbuiltins.exec('y = 2')\nre.compile('z')\n")
    assert [c.split(": ")[1] for c in _eval_exec_calls(sample)] == ["eval(", "exec("]


TARGET_OVERRIDES = {
    "+_target_=os.system": "unknown key(s) _target_",
    "+model._target_=os.system": "unknown key(s) model._target_",
    "model._target_=os.system": "unknown config key 'model._target_'",
    "+optimizer._args_=[touch,pwned]": "unknown key(s) optimizer._args_",
}


@pytest.mark.slow
def test_target_overrides_are_refused_through_the_cli(tmp_path):
    def run(override):
        case = tmp_path / str(abs(hash(override)))
        case.mkdir()
        proc = run_cli(["data=digits", "trainer.epochs=1", override, f"tracking.uri=sqlite:///{case / 'mlflow.db'}"],
                       case, cli_env(case / "outputs"))
        return override, case, proc

    with ThreadPoolExecutor(4) as pool:
        results = list(pool.map(run, TARGET_OVERRIDES))
    for override, case, proc in results:
        assert proc.returncode != 0 and "Traceback" not in proc.stderr, proc.stderr
        assert TARGET_OVERRIDES[override] in proc.stderr, proc.stderr
        assert not (case / "mlflow.db").exists() and tree(case / "outputs") == []
        assert not (case / "pwned").exists()


@pytest.mark.parametrize("text, hidden", [
    ("http://user:secret@host:5000", "secret"),
    ("https://token@host/path", "token"),
    ("postgresql://u:p4ss@db:5432/mlflow?password=other", "p4ss"),
    ("http://host:5000/?token=abc123&x=1", "abc123"),
])
def test_mask_credentials(text, hidden):
    masked = mask_credentials(text)
    assert hidden not in masked and "***" in masked


@pytest.mark.slow
@pytest.mark.parametrize("multirun", [False, True], ids=["run", "sweep"])
def test_credentials_in_the_tracking_uri_never_reach_output_or_logs(tmp_path, multirun):
    port = closed_port()
    outputs = tmp_path / "outputs"
    args = ["data=digits", "trainer.epochs=1", f"tracking.uri=http://user:secret@127.0.0.1:{port}"]
    proc = run_cli(["-m", *args] if multirun else args, tmp_path, cli_env(outputs))
    assert proc.returncode != 0
    assert f"http://***@127.0.0.1:{port} is unreachable" in proc.stderr, proc.stderr
    assert "secret" not in proc.stdout + proc.stderr
    for path in outputs.rglob("*"):  # logs, and Hydra's own overrides/config copies, if anything is left
        if path.is_file():
            assert b"secret" not in path.read_bytes(), path
