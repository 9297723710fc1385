"""The IDX file format of MNIST: parse, read and write uint8 arrays (raw or gzip), and ``DataError``.

IDX: magic = 0x00 0x00 <dtype byte> <ndim>, then ndim big-endian uint32 sizes, then the data row-major.
"""

from __future__ import annotations

import contextlib
import gzip
import math
import os
import secrets
import zlib
from pathlib import Path

import numpy as np


class DataError(ValueError):
    """Any problem with the data: a bad or truncated file, a checksum mismatch, or no source that could serve it.

    The message names the file or source and what is wrong.
    """


# ---------------------------------------------------------------------------------------------------------------
# IDX format: magic = 0x00 0x00 <dtype byte> <ndim>, then ndim big-endian uint32 sizes, then the data row-major.

_IDX_UINT8 = 0x08
IDX_IMAGES_MAGIC = 0x00000803  # uint8, 3 dims (N, rows, cols)
IDX_LABELS_MAGIC = 0x00000801  # uint8, 1 dim (N,)
_GZIP_MAGIC = b"\x1f\x8b"


def _read_bytes(path: Path) -> bytearray:
    """The whole file in a writable buffer (so arrays viewing it are writable, without a copy)."""
    with open(path, "rb") as f:
        size = os.fstat(f.fileno()).st_size
        buf = bytearray(size)
        got = f.readinto(buf)
    if got != size:
        raise DataError(f"{path}: file changed while reading (expected {size} bytes, read {got})")
    return buf


def _maybe_gunzip(data: bytes | bytearray, name: str, max_size: int | None = None) -> bytes | bytearray:
    """Decompress when the content starts with the gzip magic bytes (the suffix is not trusted).

    With `max_size`, decompression stops as soon as the output would exceed it (a gzip bomb expands a few kilobytes
    into gigabytes): DataError naming the file and both sizes."""
    if data[:2] != _GZIP_MAGIC:
        return data
    if max_size is None:
        try:
            return bytearray(gzip.decompress(data))
        except (EOFError, OSError, zlib.error) as exc:
            raise DataError(f"{name}: corrupt or truncated gzip data ({exc})") from exc
    out = bytearray()
    rest = bytes(data)
    try:
        while rest:  # one gzip member per pass, as gzip.decompress reads concatenated members
            member = zlib.decompressobj(wbits=16 + zlib.MAX_WBITS)
            out += member.decompress(rest, max_size + 1 - len(out))
            if len(out) > max_size or member.unconsumed_tail:
                raise DataError(
                    f"{name}: gzip data of {len(data)} bytes decompresses to more than {max_size} bytes, the size "
                    f"the file must have; refused without decompressing further"
                )
            if not member.eof:
                raise DataError(f"{name}: corrupt or truncated gzip data (ended before the end of its stream)")
            rest = member.unused_data.lstrip(b"\0")  # zero padding between members, as gzip.decompress allows
            if rest and rest[:2] != _GZIP_MAGIC:
                raise DataError(f"{name}: corrupt gzip data (trailing bytes after its last member)")
    except zlib.error as exc:
        raise DataError(f"{name}: corrupt or truncated gzip data ({exc})") from exc
    return out


def parse_idx(data: bytes | bytearray, name: str = "<bytes>", expect_magic: int | None = None) -> np.ndarray:
    """Parse uncompressed IDX bytes into a uint8 array, checking magic, dimensions and the exact length.

    name: used in error messages (normally the file path). expect_magic: e.g. IDX_IMAGES_MAGIC; None accepts any
    uint8 IDX. The result views ``data`` (no copy).
    """
    if len(data) < 4:
        raise DataError(f"{name}: too short for an IDX header ({len(data)} bytes, need at least 4)")
    magic = int.from_bytes(data[:4], "big")
    zero, dtype_byte, ndim = magic >> 16, (magic >> 8) & 0xFF, magic & 0xFF
    if zero != 0:
        raise DataError(f"{name}: bad IDX magic value 0x{magic:08X} (first two bytes must be zero)")
    if dtype_byte != _IDX_UINT8:
        raise DataError(
            f"{name}: unsupported IDX dtype byte 0x{dtype_byte:02X} in magic 0x{magic:08X} (only 0x08 = uint8)"
        )
    if ndim == 0:
        raise DataError(f"{name}: bad IDX magic value 0x{magic:08X} (zero dimensions)")
    if expect_magic is not None and magic != expect_magic:
        raise DataError(f"{name}: bad IDX magic value 0x{magic:08X}, expected 0x{expect_magic:08X}")
    header_len = 4 + 4 * ndim
    if len(data) < header_len:
        raise DataError(
            f"{name}: truncated IDX header: {ndim} dimensions need {header_len} bytes, file has {len(data)}"
        )
    shape = tuple(int.from_bytes(data[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim))
    expected = header_len + math.prod(shape)
    if len(data) != expected:
        what = "truncated" if len(data) < expected else "trailing bytes after the data"
        raise DataError(
            f"{name}: {what}: shape {shape} needs {expected} bytes in total, file has {len(data)} bytes"
        )
    return np.frombuffer(data, dtype=np.uint8, offset=header_len).reshape(shape)


def read_idx(path: str | os.PathLike, expect_magic: int | None = None) -> np.ndarray:
    """Read an IDX file (raw or gzip, detected by the magic bytes 1f 8b) into a writable uint8 array.

    Raises DataError naming the file for a missing file, a bad magic value or dtype byte, or a wrong length.
    """
    path = Path(path)
    try:
        data = _read_bytes(path)
    except OSError as exc:
        raise DataError(f"{path}: cannot read IDX file ({exc.strerror or exc})") from exc
    return parse_idx(_maybe_gunzip(data, str(path)), str(path), expect_magic)


def check_idx_pair(images: np.ndarray, labels: np.ndarray, images_name: str, labels_name: str) -> None:
    """Images (N, rows, cols) and labels (N,) must agree on N."""
    if images.shape[0] != labels.shape[0]:
        raise DataError(
            f"image/label count mismatch: {images_name} has {images.shape[0]} images, "
            f"{labels_name} has {labels.shape[0]} labels"
        )


def read_idx_pair(images_path: str | os.PathLike, labels_path: str | os.PathLike) -> tuple[np.ndarray, np.ndarray]:
    """Read an images file (magic 0x803) and its labels file (magic 0x801); their counts must match."""
    images = read_idx(images_path, IDX_IMAGES_MAGIC)
    labels = read_idx(labels_path, IDX_LABELS_MAGIC)
    check_idx_pair(images, labels, str(images_path), str(labels_path))
    return images, labels


def idx_bytes(array: np.ndarray) -> bytes:
    """Standard uncompressed IDX encoding of a uint8 array."""
    array = np.asarray(array)
    if array.dtype != np.uint8:
        raise ValueError(f"write_idx supports uint8 arrays only, got dtype {array.dtype}")
    if not 1 <= array.ndim <= 255:
        raise ValueError(f"write_idx needs 1..255 dimensions, got {array.ndim}")
    if any(s >= 2**32 for s in array.shape):
        raise ValueError(f"write_idx: dimension too large for IDX: shape {array.shape}")
    header = bytes((0, 0, _IDX_UINT8, array.ndim)) + b"".join(s.to_bytes(4, "big") for s in array.shape)
    return header + np.ascontiguousarray(array).tobytes()


def _atomic_write(path: Path, data: bytes | bytearray) -> None:
    """Write via a temp file in the same directory + os.replace, so readers never see a partial file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    # Not mkstemp: its 0600 mode would ignore the umask and hide a shared cache from other users.
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}.tmp")
    try:
        with open(tmp, "xb") as f:
            f.write(data)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def write_idx(path: str | os.PathLike, array: np.ndarray) -> None:
    """Write a uint8 array as a standard uncompressed IDX file (atomically)."""
    _atomic_write(Path(path), idx_bytes(array))
