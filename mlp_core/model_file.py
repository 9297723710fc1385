"""Reading a model .npz without trusting it: the zip directory, the metadata and every array's .npy header are checked
before ``MLP.load`` allocates anything (``_Archive``)."""

from __future__ import annotations

import json
import math
import numbers
import zipfile

import numpy as np

_FORMAT_VERSION = 1
_META_KEYS = ("format_version", "input_dim", "num_classes", "hidden_sizes", "activation", "init", "bias", "dtype")
_STORED_DTYPES = ("float32", "float64")
# np.load's test for an .npz: a local file header, or the end record of an empty archive.
_ZIP_SIGNATURES = (b"PK\x03\x04", b"PK\x05\x06")


def _is_int(value) -> bool:
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def _reason(err: BaseException) -> str:
    """An exception's message on one line, to quote inside a one-sentence error."""
    return " ".join(str(err).split()) or type(err).__name__


def _describe(dtype: np.dtype) -> str:
    return dtype.str if dtype.kind in "SUV" else dtype.name  # "<U12" says more than "str384"


class _Archive:
    """The members of an open model .npz, checked against the zip directory and read header first.

    `members` maps each key (the member name without ".npy") to its ZipInfo. Construction refuses duplicate,
    encrypted and compressed members and a directory that claims more bytes than the file holds, so every size a
    header declares and `check_data_size` accepts is backed by bytes on disk."""

    def __init__(self, archive: zipfile.ZipFile, file_size: int, where: str):
        self.archive = archive
        self.where = where
        self.members: dict[str, zipfile.ZipInfo] = {}
        for info in archive.infolist():
            key = info.filename.removesuffix(".npy")
            if key in self.members:
                raise ValueError(f"{where}: the archive holds {key!r} more than once")
            if info.flag_bits & 0x1:
                raise ValueError(f"{where}: member {key!r} is encrypted; MLP.save writes plain members")
            if info.compress_type != zipfile.ZIP_STORED:
                method = zipfile.compressor_names.get(info.compress_type, f"method {info.compress_type}")
                raise ValueError(
                    f"{where}: member {key!r} is stored compressed ({method}); MLP.save writes uncompressed members"
                )
            if info.compress_size != info.file_size:
                raise ValueError(
                    f"{where}: member {key!r} is uncompressed but the zip directory gives it {info.compress_size} "
                    f"bytes stored and {info.file_size} bytes of content"
                )
            self.members[key] = info
        claimed = sum(info.file_size for info in self.members.values())
        if claimed > file_size:
            raise ValueError(
                f"{where}: the zip directory claims {claimed} bytes of members but the file is only {file_size} bytes"
            )

    def header(self, key: str) -> tuple[tuple[int, ...], np.dtype, int]:
        """(shape, dtype, bytes after the header) of a .npy member, from its header alone."""
        info = self.members[key]
        try:
            with self.archive.open(info) as fp:
                version = np.lib.format.read_magic(fp)
                if version == (1, 0):
                    shape, _, dtype = np.lib.format.read_array_header_1_0(fp)
                elif version == (2, 0):
                    shape, _, dtype = np.lib.format.read_array_header_2_0(fp)
                else:
                    raise ValueError(f".npy format version {version[0]}.{version[1]} is not 1.0 or 2.0")
                return shape, dtype, info.file_size - fp.tell()
        except (zipfile.BadZipFile, EOFError) as err:  # zipfile reads ahead, so a bad CRC can surface here
            raise ValueError(f"{self.where}: array {key!r} could not be read ({_reason(err)})") from None
        except ValueError as err:
            raise ValueError(f"{self.where}: array {key!r} has no valid .npy header ({_reason(err)})") from None

    def check_data_size(self, key: str, shape: tuple[int, ...], dtype: np.dtype, data_bytes: int) -> None:
        declared = math.prod(shape) * dtype.itemsize
        if declared != data_bytes:
            raise ValueError(
                f"{self.where}: array {key!r} declares shape {shape} ({declared} bytes) but its member holds "
                f"{data_bytes} bytes"
            )

    def read_array(self, key: str) -> np.ndarray:
        """The array of a member whose header has been checked; never unpickles."""
        try:
            with self.archive.open(self.members[key]) as fp:
                return np.lib.format.read_array(fp, allow_pickle=False)
        except (zipfile.BadZipFile, EOFError, ValueError) as err:
            raise ValueError(f"{self.where}: array {key!r} could not be read ({_reason(err)})") from None

    def read_meta(self) -> dict:
        """The metadata, parsed and checked key by key except for what ModelConfig checks."""
        where = self.where
        if "meta" not in self.members:
            raise ValueError(f"{where}: metadata 'meta' is missing, so the architecture is unknown")
        shape, dtype, data_bytes = self.header("meta")
        if dtype.kind != "U" or shape != ():
            raise ValueError(
                f"{where}: metadata 'meta' must be a 0-d unicode string array, got dtype {_describe(dtype)} and "
                f"shape {shape}"
            )
        self.check_data_size("meta", shape, dtype, data_bytes)
        text = str(self.read_array("meta"))
        try:
            meta = json.loads(text)
        except (ValueError, RecursionError) as err:
            raise ValueError(f"{where}: metadata 'meta' is not valid JSON ({_reason(err)})") from None
        if not isinstance(meta, dict):
            raise ValueError(f"{where}: metadata 'meta' must be a JSON object, got {type(meta).__name__}")
        if "format_version" not in meta:
            raise ValueError(f"{where}: metadata key 'format_version' is missing")
        version = meta["format_version"]
        if not (_is_int(version) and version == _FORMAT_VERSION):
            raise ValueError(f"{where}: unknown format_version {version!r}; this version reads {_FORMAT_VERSION}")
        for key in _META_KEYS:
            if key not in meta:
                raise ValueError(f"{where}: metadata key {key!r} is missing")
        for key in meta:
            if key not in _META_KEYS:
                raise ValueError(f"{where}: metadata key {key!r} is not part of format_version {_FORMAT_VERSION}")
        for key, least in (("input_dim", 1), ("num_classes", 2)):
            if not _is_int(meta[key]) or meta[key] < least:
                raise ValueError(f"{where}: metadata {key!r} must be an integer >= {least}, got {meta[key]!r}")
        if meta["dtype"] not in _STORED_DTYPES:
            choices = ", ".join(_STORED_DTYPES)
            raise ValueError(f"{where}: metadata 'dtype' is {meta['dtype']!r}; valid choices: {choices}")
        return meta
