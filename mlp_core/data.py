"""Datasets for the MLP: MNIST (assignment and standard splits) and scikit-learn's 8x8 digits, normalised.

Normalisation (``normalization=``), always with scalar statistics computed exactly from the uint8 pixels:

- ``"train"`` (default, as in the course): mean and std over all pixels of the training-split images, applied to
  every split;
- ``"per_split"``: every split normalised with its own mean and std (``Dataset.mean``/``std`` hold the train ones);
- ``"full_train"``: mean and std over the whole training pool the split is cut from (all 60,000 MNIST training
  images; all 1,797 digits);
- ``"none"``: no standardisation, pixels only scaled to [0, 1]: x / 255 for MNIST, x / 16 for digits
  (reported as mean 0, std 255 or 16).

The std is the population std (ddof 0), like ``np.std``. Outputs are float32 and equal to
``((x - mean) / std)`` computed in float64 and then cast to float32.

A process loads, verifies and normalises a dataset once and then serves it from memory while the files it was read
from keep their state (``source_state``); the arrays it hands out are read-only, so no caller can change what the next
caller gets.
"""

from __future__ import annotations

import hashlib
import logging
import importlib.util
import math
import os
import time
from collections import OrderedDict
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from mlp_core.idx import (
    IDX_IMAGES_MAGIC,
    IDX_LABELS_MAGIC,
    DataError,
    check_idx_pair,
    parse_idx,
    read_idx,
    read_idx_pair,
    write_idx,
)
from mlp_core import sources
from mlp_core.sources import ensure_mnist, load_mnist_files, resolve_cache_dir

__all__ = [
    "DATASETS",
    "NORMALIZATIONS",
    "SPLITS",
    "DataError",
    "Dataset",
    "Split",
    "clear_dataset_cache",
    "ensure_mnist",
    "load_dataset",
    "read_idx",
    "read_idx_pair",
    "validate_data_args",
    "write_idx",
]

log = logging.getLogger("mlp_core.data")

DATASETS = ("mnist", "digits")
SPLITS = {"mnist": ("assignment", "standard"), "digits": ("default", "assignment")}
NORMALIZATIONS = ("train", "per_split", "full_train", "none")

MNIST_TRAIN_IMAGES, MNIST_TEST_IMAGES, MNIST_INPUT_DIM = 60_000, 10_000, 784
DIGITS_IMAGES, DIGITS_INPUT_DIM = 1_797, 64
ASSIGNMENT_TRAIN_SIZE = 20_000
STANDARD_VAL_SIZE = 5_000
DIGITS_TRAIN_SIZE = 1_500
_STATS_CHUNK = 1 << 22


@dataclass(frozen=True)
class Split:
    x: np.ndarray  # (N, D) float32, normalised
    y: np.ndarray  # (N,) int64 labels 0..9

    def __len__(self) -> int:
        return int(self.y.shape[0])


@dataclass(frozen=True)
class Dataset:
    name: str  # "mnist" | "digits"
    split: str  # "assignment" | "standard" | "default" (digits)
    train: Split
    val: Split
    test: Split | None  # None for the assignment split
    mean: float  # normalisation statistics used for the training split
    std: float
    source: str  # which source served the raw data
    digest: str  # sha256 (16 hex chars) over the raw uint8 images and labels of every split, in order
    num_classes: int = 10

    @property
    def input_dim(self) -> int:
        return int(self.train.x.shape[1])


@dataclass(frozen=True)
class SplitSizes:
    """What ``load_dataset`` will return, known without loading: examples per split and the input width."""

    train: int
    val: int
    test: int  # 0 where the split has no test set
    input_dim: int
    num_classes: int = 10


def split_sizes(name: str, split: str) -> SplitSizes:
    """The sizes of ``load_dataset(name, split)``'s splits (the one place they are defined; ValueError if unknown)."""
    validate_data_args(name, split, "train")
    if name == "digits":
        return SplitSizes(DIGITS_TRAIN_SIZE, DIGITS_IMAGES - DIGITS_TRAIN_SIZE, 0, DIGITS_INPUT_DIM)
    if split == "assignment":
        return SplitSizes(ASSIGNMENT_TRAIN_SIZE, MNIST_TEST_IMAGES, 0, MNIST_INPUT_DIM)
    return SplitSizes(MNIST_TRAIN_IMAGES - STANDARD_VAL_SIZE, STANDARD_VAL_SIZE, MNIST_TEST_IMAGES, MNIST_INPUT_DIM)


def validate_data_args(name: str, split: str, normalization: str) -> None:
    """Raise ValueError naming the bad value and the valid choices. No IO."""
    if name not in DATASETS:
        raise ValueError(f"unknown dataset name {name!r}; valid choices: {', '.join(DATASETS)}")
    if split not in SPLITS[name]:
        raise ValueError(f"unknown split {split!r} for dataset {name!r}; valid choices: {', '.join(SPLITS[name])}")
    if normalization not in NORMALIZATIONS:
        raise ValueError(f"unknown normalization {normalization!r}; valid choices: {', '.join(NORMALIZATIONS)}")


# ---------------------------------------------------------------------------------------------------------------
# Normalisation: statistics from exact integer sums of the uint8 values, applied through a 256-entry lookup table.


def pixel_stats(images: np.ndarray) -> tuple[float, float]:
    """Mean and population std of all pixels of uint8 ``images`` (float64, within a few ulps of the exact values).

    Exact integer sums avoid both float accumulation error and the cancellation of E[x²] - E[x]²; chunks keep the
    uint16 squares buffer small.
    """
    if images.dtype != np.uint8 or images.size == 0:
        raise ValueError(f"pixel_stats needs a non-empty uint8 array, got {images.dtype} of size {images.size}")
    flat = images.reshape(-1)
    n = int(flat.size)
    total = int(flat.sum(dtype=np.uint64))
    total_sq = 0
    for start in range(0, n, _STATS_CHUNK):
        total_sq += int(np.square(flat[start : start + _STATS_CHUNK], dtype=np.uint16).sum(dtype=np.uint64))
    mean = total / n
    variance_num = n * total_sq - total * total  # = n² · variance, exactly
    std = math.sqrt(variance_num) / n
    if std == 0.0:
        raise DataError("pixel standard deviation is zero; cannot normalise a constant image set")
    return mean, std


def _normalise(images: np.ndarray, mean: float, std: float) -> np.ndarray:
    """(N, ...) uint8 -> (N, D) float32 equal to float32((x - mean) / std) evaluated in float64."""
    table = ((np.arange(256, dtype=np.float64) - mean) / std).astype(np.float32)
    return table[images.reshape(images.shape[0], -1)]


def _digest(parts: list[tuple[np.ndarray, np.ndarray]], name: str, split: str) -> str:
    h = hashlib.sha256(f"{name}/{split}".encode())
    for images, labels in parts:
        h.update(repr((images.shape, labels.shape)).encode())
        h.update(np.ascontiguousarray(images).data)
        h.update(np.ascontiguousarray(labels, dtype=np.uint8).data)
    return h.hexdigest()[:16]


def _build(
    name: str,
    split: str,
    normalization: str,
    parts: dict[str, tuple[np.ndarray, np.ndarray] | None],
    pool_images: np.ndarray,
    max_value: int,
    source: str,
) -> Dataset:
    """parts: "train"/"val"/"test" -> raw (uint8 images, uint8 labels) or None. pool_images: for "full_train"."""
    train_images = parts["train"][0]
    if normalization == "train":
        mean, std = pixel_stats(train_images)
    elif normalization == "full_train":
        mean, std = pixel_stats(pool_images)
    elif normalization == "none":
        mean, std = 0.0, float(max_value)
    else:  # per_split: reported statistics are the training split's
        mean, std = pixel_stats(train_images)

    splits: dict[str, Split | None] = {}
    for key, part in parts.items():
        if part is None:
            splits[key] = None
            continue
        images, labels = part
        m, s = pixel_stats(images) if normalization == "per_split" else (mean, std)
        splits[key] = Split(x=_normalise(images, m, s), y=labels.astype(np.int64))

    present = [p for p in parts.values() if p is not None]
    dataset = Dataset(
        name=name,
        split=split,
        train=splits["train"],
        val=splits["val"],
        test=splits["test"],
        mean=float(mean),
        std=float(std),
        source=source,
        digest=_digest(present, name, split),
    )
    log.info(
        "%s/%s: train %d, val %d, test %s; normalization %s (mean %.6f, std %.6f); digest %s",
        name, split, len(dataset.train), len(dataset.val),
        len(dataset.test) if dataset.test is not None else "none", normalization, mean, std, dataset.digest,
    )
    return dataset


# ---------------------------------------------------------------------------------------------------------------
# MNIST


def _mnist_arrays(root, allow_download: bool) -> tuple[dict[str, np.ndarray], str]:
    files, source, cache = load_mnist_files(root, allow_download)
    arrays: dict[str, np.ndarray] = {}
    for prefix in ("train", "t10k"):
        images_name, labels_name = f"{prefix}-images-idx3-ubyte", f"{prefix}-labels-idx1-ubyte"
        images = parse_idx(files[images_name], str(cache / images_name), IDX_IMAGES_MAGIC)
        labels = parse_idx(files[labels_name], str(cache / labels_name), IDX_LABELS_MAGIC)
        check_idx_pair(images, labels, str(cache / images_name), str(cache / labels_name))
        arrays[f"{prefix}_images"], arrays[f"{prefix}_labels"] = images, labels
    return arrays, source


def _load_mnist(split: str, root, normalization: str, allow_download: bool) -> Dataset:
    a, source = _mnist_arrays(root, allow_download)
    train_x, train_y, test_x, test_y = a["train_images"], a["train_labels"], a["t10k_images"], a["t10k_labels"]
    n = split_sizes("mnist", split).train
    if split == "assignment":
        parts = {"train": (train_x[:n], train_y[:n]), "val": (test_x, test_y), "test": None}
    else:  # standard
        parts = {"train": (train_x[:n], train_y[:n]), "val": (train_x[n:], train_y[n:]), "test": (test_x, test_y)}
    return _build("mnist", split, normalization, parts, train_x, 255, source)


# ---------------------------------------------------------------------------------------------------------------
# scikit-learn digits (8x8, 0..16): a tiny stand-in for MNIST in smoke tests


def _load_digits(normalization: str) -> Dataset:
    try:
        from sklearn.datasets import load_digits
    except ImportError as exc:
        cause: BaseException | None = exc
        while cause is not None:  # an interrupt during the (slow) import can surface as an ImportError
            if isinstance(cause, KeyboardInterrupt):
                raise cause from None
            cause = cause.__cause__ or cause.__context__
        if importlib.util.find_spec("sklearn") is not None:
            raise  # installed but broken: its own message says why
        raise DataError("dataset 'digits' needs scikit-learn (pip install scikit-learn)") from exc
    bunch = load_digits()
    images = bunch.data.astype(np.uint8)  # values are integers 0..16
    labels = bunch.target.astype(np.uint8)
    n = split_sizes("digits", "default").train
    parts = {"train": (images[:n], labels[:n]), "val": (images[n:], labels[n:]), "test": None}
    return _build("digits", "default", normalization, parts, images, 16, "sklearn:load_digits")


# ---------------------------------------------------------------------------------------------------------------
# The process's datasets: each loaded, verified and normalised once, and served again while its files are unchanged.

CACHED_DATASETS = 4  # the most recently used ones are kept (MNIST assignment: 94 MB of float32, standard: 220 MB)
#: A file changed this recently is not identified by its state: a rewrite within the file system's timestamp
#: granularity (a clock tick on Linux, 2 s on FAT) could leave size, times and inode as they were. Such a load is
#: not kept, so the next one reads and verifies the files again (git's "racily clean" rule).
RACY_WINDOW_NS = 2_000_000_000
_datasets: OrderedDict[tuple, tuple[tuple, Dataset]] = OrderedDict()


def clear_dataset_cache() -> None:
    """Forget every dataset this process has loaded: the next load_dataset reads, verifies and normalises again."""
    _datasets.clear()


def _file_state(path: Path) -> tuple | None:
    try:
        st = os.stat(path)
    except FileNotFoundError:
        return None
    return (st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino, st.st_dev)


def source_state(paths: list[Path]) -> tuple | None:
    """(size, mtime, ctime, inode, device) of each of `paths` (None for a missing one), taken before they are read,
    so content read later is never older than the state; None when a file changed within RACY_WINDOW_NS of now."""
    now = time.time_ns()
    states = tuple(_file_state(path) for path in paths)
    if any(state is not None and max(state[1], state[2]) >= now - RACY_WINDOW_NS for state in states):
        return None
    return states


def _digits_file() -> Path | None:
    """The file scikit-learn's load_digits reads, found without importing scikit-learn (None when not installed)."""
    spec = importlib.util.find_spec("sklearn")
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(spec.submodule_search_locations[0]) / "datasets" / "data" / "digits.csv.gz"


def _source_files(name: str, split: str, root, normalization: str) -> tuple[tuple, list[Path] | None]:
    """(cache key, the files the dataset is read from; None when they are unknown and the load must not be kept).
    MNIST's key holds the resolved cache directory."""
    if name == "digits":
        digits = _digits_file()
        return ("digits", normalization), None if digits is None else [digits]
    cache = Path(os.path.abspath(resolve_cache_dir(root)))
    paths = [cache / f for file in sources.MNIST_FILES for f in (file, f"{file}.gz")]
    return ("mnist", split, normalization, str(cache)), paths


def _read_only(dataset: Dataset) -> Dataset:
    """The dataset with read-only views of its arrays, themselves made read-only (a view of a read-only array
    cannot be made writeable)."""

    def view(split: Split | None) -> Split | None:
        if split is None:
            return None
        split.x.flags.writeable = split.y.flags.writeable = False
        return Split(split.x.view(), split.y.view())

    return replace(dataset, train=view(dataset.train), val=view(dataset.val), test=view(dataset.test))


def load_dataset(
    name: str = "mnist",
    split: str = "assignment",
    root: str | os.PathLike | None = None,
    normalization: str = "train",
    allow_download: bool = True,
) -> Dataset:
    """Load, split and normalise a dataset; its arrays are read-only.

    mnist/assignment: train = first 20,000 training images (file order), val = the 10,000 test images, test None.
    mnist/standard: train = first 55,000 training images, val = last 5,000, test = the 10,000 test images.
    digits (split "default" or "assignment"): 1,797 8x8 images; train = first 1,500, val = last 297, test None.
    root: MNIST cache directory (None -> $MLP_SWEEPS_DATA -> per-user cache); see mlp_core.sources for the chain.

    A repeated load in the same process is served from memory, without reading or verifying the files again, while
    every file the dataset was read from keeps its size, mtime, ctime and inode (`source_state`); any change to them,
    or a file too recently changed to be judged by them, makes the load read and verify the files again.
    """
    validate_data_args(name, split, normalization)
    if name == "digits":
        split = "default"
    key, paths = _source_files(name, split, root, normalization)
    state = None if paths is None else source_state(paths)
    kept = _datasets.get(key)
    if kept is not None and state is not None and kept[0] == state:
        _datasets.move_to_end(key)
        log.debug("%s/%s served from this process's memory (files unchanged)", name, split)
        return _read_only(kept[1])
    if name == "digits":
        dataset = _read_only(_load_digits(normalization))
    else:
        dataset = _read_only(_load_mnist(split, None if root is None else Path(root), normalization, allow_download))
    _datasets.pop(key, None)
    if state is not None:
        _datasets[key] = (state, dataset)
        while len(_datasets) > CACHED_DATASETS:
            _datasets.popitem(last=False)
    return dataset
