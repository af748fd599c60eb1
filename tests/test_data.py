"""The data registry: deterministic embedded sets, prepared copies, real loaders on tiny fake files."""

import hashlib
import pickle
import struct

import numpy as np
import pytest

from replikit import data
from replikit.data import embedded, real
from replikit.data.prepare import prepare


def digest(folder):
    return {
        str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*.npy"))
    }


def test_registry_lists_and_rejects():
    assert {"mnist1d", "digits", "mnist", "svhn", "cifar10"} <= set(data.names())
    with pytest.raises(KeyError, match="unknown data set 'mnist2d'"):
        data.load("mnist2d")


def test_embedded_sets_are_deterministic_and_well_formed():
    a, b = embedded.generate_mnist1d(600, seed=1), embedded.generate_mnist1d(600, seed=1)
    assert np.array_equal(a.x_train, b.x_train) and np.array_equal(a.y_test, b.y_test)
    assert a.x_train.shape == (480, 40) and a.x_train.dtype == np.float32 and set(a.y_train) == set(range(10))
    assert not np.array_equal(a.x_train, embedded.generate_mnist1d(600, seed=2).x_train)
    d = data.load("digits")
    assert d.x_train.shape[1:] == (1, 8, 8) and 0.0 <= d.x_train.min() and d.x_train.max() <= 1.0
    assert len(d.x_train) + len(d.x_test) == 1797


def test_generation_leaves_numpy_global_state_alone():
    np.random.seed(123)
    expected = np.random.rand()
    np.random.seed(123)
    embedded.generate_mnist1d(200, seed=5)
    assert np.random.rand() == expected


def test_prepare_writes_identical_bytes_twice(tmp_path):
    prepare(tmp_path / "a")
    prepare(tmp_path / "b")
    first, second = digest(tmp_path / "a"), digest(tmp_path / "b")
    assert first == second and len(first) == 8
    read = data.Dataset.read("mnist1d", tmp_path / "a" / "mnist1d", 10)
    fresh = embedded.generate_mnist1d()
    assert np.array_equal(read.x_train, fresh.x_train) and np.array_equal(read.y_test, fresh.y_test)


def test_damaged_prepared_data_names_the_fix(tmp_path):
    prepare(tmp_path)
    (tmp_path / "digits" / "x_train.npy").write_bytes(b"not an array")
    with pytest.raises(ValueError, match=r"digits is damaged .*dvc repro prepare"):
        data.Dataset.read("digits", tmp_path / "digits", 10)
    np.save(tmp_path / "digits" / "x_train.npy", np.zeros((3, 1, 8, 8), np.float32))  # wrong length
    with pytest.raises(ValueError, match="3 inputs but 1257 labels"):
        data.Dataset.read("digits", tmp_path / "digits", 10)


def test_dataset_rejects_broken_arrays():
    x, y = np.zeros((4, 3), np.float32), np.array([0, 1, 2, 3])
    with pytest.raises(ValueError, match="4 inputs but 3 labels"):
        data.Dataset("t", x, y[:3], x, y, n_classes=4)
    with pytest.raises(ValueError, match="labels outside"):
        data.Dataset("t", x, y, x, y, n_classes=3)
    with pytest.raises(ValueError, match="NaN"):
        data.Dataset("t", np.full((4, 3), np.nan, np.float32), y, x, y, n_classes=4)


# ---- real data: the torchvision classes read tiny files written here in their on-disk formats ----


def write_idx(path, array):
    codes = {1: 0x0801, 3: 0x0803}
    with open(path, "wb") as f:
        f.write(struct.pack(">I", codes[array.ndim]) + struct.pack(f">{array.ndim}I", *array.shape))
        f.write(array.astype(np.uint8).tobytes())


def test_mnist_loader_reads_idx_files(tmp_path):
    raw = tmp_path / "MNIST" / "raw"
    raw.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for prefix, n in (("train", 12), ("t10k", 5)):
        write_idx(raw / f"{prefix}-images-idx3-ubyte", rng.integers(0, 256, (n, 28, 28)))
        write_idx(raw / f"{prefix}-labels-idx1-ubyte", np.arange(n) % 10)
    ds = data.load("mnist", root=tmp_path)
    assert ds.x_train.shape == (12, 1, 28, 28) and ds.x_test.shape == (5, 1, 28, 28)
    assert ds.x_train.max() <= 1.0 and list(ds.y_test) == [0, 1, 2, 3, 4]
    assert real.to_rgb32(ds.x_test).shape == (5, 3, 32, 32)


def test_svhn_loader_reads_mat_files(tmp_path, monkeypatch):
    from scipy.io import savemat
    from torchvision.datasets import SVHN

    monkeypatch.setattr(SVHN, "_check_integrity", lambda self: True)  # md5s are of the real files
    folder = tmp_path / "svhn"
    folder.mkdir()
    for split, n in (("train", 6), ("test", 4)):
        savemat(
            folder / f"{split}_32x32.mat",
            {"X": np.zeros((32, 32, 3, n), np.uint8), "y": (np.arange(n) % 10 + 1)[:, None].astype(np.uint8)},
        )
    ds = data.load("svhn", root=tmp_path)
    assert ds.x_train.shape == (6, 3, 32, 32) and list(ds.y_test) == [1, 2, 3, 4]
    assert list(ds.y_train)[-1] == 6


def test_cifar10_loader_reads_pickled_batches(tmp_path, monkeypatch):
    import torchvision.datasets.cifar as cifar

    monkeypatch.setattr(cifar, "check_integrity", lambda *args, **kwargs: True)  # md5s are of the real files
    folder = tmp_path / "cifar-10-batches-py"
    folder.mkdir()
    names = [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]
    for i, name in enumerate(names):
        batch = {"data": np.full((2, 3072), i, np.uint8), "labels": [i % 10, (i + 1) % 10]}
        (folder / name).write_bytes(pickle.dumps(batch))
    (folder / "batches.meta").write_bytes(pickle.dumps({"label_names": [str(i) for i in range(10)]}))
    ds = data.load("cifar10", root=tmp_path)
    assert ds.x_train.shape == (10, 3, 32, 32) and ds.x_test.shape == (2, 3, 32, 32)
    assert ds.x_test.max() == pytest.approx(5 / 255)


def test_missing_real_data_names_the_fetch_command(tmp_path):
    with pytest.raises(real.MissingDataError, match="python -m replikit.data.fetch cifar10"):
        data.load("cifar10", root=tmp_path)


def test_generated_sizes_are_cached_on_disk_whole(tmp_path, monkeypatch):
    import replikit.config

    monkeypatch.setattr(replikit.config, "find_root", lambda *a: tmp_path)
    first = embedded.mnist1d.__wrapped__(600, 3)
    (folder,) = (tmp_path / ".replikit" / "cache").iterdir()
    assert folder.name.startswith("mnist1d-600-3-") and not list(folder.parent.glob(".*"))  # no partial copy
    again = embedded.mnist1d.__wrapped__(600, 3)
    assert again.meta["source"] == str(folder)  # read back, not generated
    for key in ("x_train", "y_train", "x_test", "y_test"):
        np.testing.assert_array_equal(getattr(first, key), getattr(again, key))
    (folder / "x_train.npy").write_bytes(b"damaged")
    rebuilt = embedded.mnist1d.__wrapped__(600, 3)
    np.testing.assert_array_equal(rebuilt.x_train, first.x_train)
    np.testing.assert_array_equal(embedded.mnist1d.__wrapped__(600, 3).x_train, first.x_train)
