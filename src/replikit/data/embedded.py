"""Embedded data sets: generated or bundled, offline, deterministic."""

from __future__ import annotations

import functools
import os
import shutil
from pathlib import Path

import numpy as np

from replikit.data import Dataset, register

PREPARED = Path("data") / "default"  # relative to the project root (see replikit.config.find_root)


def _prepared(name: str) -> Path | None:
    from replikit.config import ConfigError, find_root

    try:
        folder = find_root() / PREPARED / name
    except ConfigError:  # outside a checkout: generate in memory
        return None
    return folder if (folder / "y_test.npy").is_file() else None


@register("mnist1d")
@functools.cache
def mnist1d(num_samples: int = 10_000, seed: int = 42) -> Dataset:
    """MNIST-1D (Greydanus 2020): 40-sample signals of 10 digit templates, 80/20 train/test.

    Generated with ``mnist1d.data.make_dataset`` (its ``get_dataset`` tries a URL first). The
    generator's own defaults are kept except ``num_samples`` (10,000 here, 4,000 more than the
    package's 5,000, so small-scale effects are not drowned by test-set noise).
    """
    if (num_samples, seed) == (10_000, 42) and (folder := _prepared("mnist1d")):
        return Dataset.read("mnist1d", folder, n_classes=10)
    return _cached(f"mnist1d-{num_samples}-{seed}", lambda: generate_mnist1d(num_samples, seed))


def _cached(key: str, build) -> Dataset:
    """``build()``, kept on disk under ``.replikit/cache/<key>-<mnist1d version>/`` of the checkout.

    Other sizes than the prepared one (data_diet's 30,000 examples take 7 s to generate) are generated
    once per checkout, not once per worker process. Generation is deterministic, so the cache only saves
    time; it is written whole and then renamed into place, so a kill or a concurrent writer cannot leave a
    partial copy that is read. Outside a checkout, nothing is cached.
    """
    from importlib.metadata import version

    from replikit.config import ConfigError, find_root

    try:
        folder = find_root() / ".replikit" / "cache" / f"{key}-{version('mnist1d')}"
    except ConfigError:
        return build()
    if (folder / "y_test.npy").is_file():
        try:
            return Dataset.read("mnist1d", folder, n_classes=10)
        except ValueError:
            shutil.rmtree(folder, ignore_errors=True)  # damaged: build it again
    ds = build()
    tmp = folder.with_name(f".{folder.name}.{os.getpid()}")
    try:
        ds.save(tmp)
        tmp.rename(folder)
    except OSError:  # another process got there first, or the disk is read-only: the data are the same
        shutil.rmtree(tmp, ignore_errors=True)
    return ds


def generate_mnist1d(num_samples: int = 10_000, seed: int = 42) -> Dataset:
    from mnist1d.data import get_dataset_args, make_dataset

    args = get_dataset_args()
    args.num_samples, args.seed = num_samples, seed
    state = np.random.get_state()  # make_dataset reseeds numpy's global generator: put it back
    try:
        d = make_dataset(args)
    finally:
        np.random.set_state(state)
    return Dataset(
        "mnist1d",
        x_train=d["x"].astype(np.float32),
        y_train=d["y"].astype(np.int64),
        x_test=d["x_test"].astype(np.float32),
        y_test=d["y_test"].astype(np.int64),
        n_classes=10,
        meta={"generator": "mnist1d.make_dataset", "num_samples": num_samples, "seed": seed},
    )


@register("digits")
@functools.cache
def digits(test_fraction: float = 0.3, seed: int = 0) -> Dataset:
    """scikit-learn's 1,797 8x8 digits, pixels scaled to [0, 1], shape (N, 1, 8, 8), stratified split."""
    if (test_fraction, seed) == (0.3, 0) and (folder := _prepared("digits")):
        return Dataset.read("digits", folder, n_classes=10)
    return generate_digits(test_fraction, seed)


def generate_digits(test_fraction: float = 0.3, seed: int = 0) -> Dataset:
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    bunch = load_digits()
    x = (bunch.images / 16.0).astype(np.float32)[:, None]
    y = bunch.target.astype(np.int64)
    x_tr, x_te, y_tr, y_te = train_test_split(x, y, test_size=test_fraction, random_state=seed, stratify=y)
    return Dataset(
        "digits", x_tr, y_tr, x_te, y_te, n_classes=10, meta={"source": "sklearn.datasets.load_digits"}
    )


# what `prepare` writes to data/default/: always generated afresh, never read back from there
EMBEDDED = {"mnist1d": generate_mnist1d, "digits": generate_digits}
