"""Stand-ins for the real data sets: their shapes, dtypes and value range, random content, made offline.

``fake:mnist``, ``fake:svhn`` and ``fake:cifar10`` in the registry have the torchvision loaders' shapes
(MNIST (N, 1, 28, 28), SVHN and CIFAR-10 (N, 3, 32, 32)), float32 pixels k/255 in [0, 1], int64 labels
0..9 and, by default, the real train/test sizes. Content is seeded noise (identical arrays on every
call): nothing is learnable, so they test wiring, shapes, memory and speed, never a claim.

Full-profile code keeps asking for ``mnist``/``svhn``/``cifar10``; with ``REPLIKIT_FAKE_DATA`` set
(or inside :func:`substitute`), :func:`replikit.data.load` hands out these stand-ins instead:

    REPLIKIT_FAKE_DATA=1          the real sizes (what ``make gpu-check`` runs the full profiles on)
    REPLIKIT_FAKE_DATA=512:128    512 training and 128 test examples (CPU tests of the full-profile path)

The variable reaches papermill kernels and the seed worker processes too. The full profile's byte-level
text corpus (downstream_scaling) has its stand-in here as well: :func:`text_bytes`.
"""

from __future__ import annotations

import contextlib
import functools
import os
import zlib
from collections.abc import Iterator

import numpy as np

from replikit.data import Dataset, register

ENV = "REPLIKIT_FAKE_DATA"
# name -> (input shape, train size, test size) of the torchvision set it stands in for
REAL = {
    "mnist": ((1, 28, 28), 60_000, 10_000),
    "svhn": ((3, 32, 32), 73_257, 26_032),
    "cifar10": ((3, 32, 32), 50_000, 10_000),
}
TEXT_BYTES = 2_000_000  # length of a stand-in text file read whole


def active() -> tuple[int | None, int | None] | None:
    """(n_train, n_test) when ``REPLIKIT_FAKE_DATA`` is set (None = the real size), else None."""
    value = os.environ.get(ENV, "").strip()
    if value in ("", "0"):
        return None
    if value == "1":
        return None, None
    try:
        n_train, n_test = (int(v) for v in value.split(":"))
    except ValueError:
        raise ValueError(
            f"{ENV}={value!r}: expected 1 (real sizes) or N_TRAIN:N_TEST, e.g. 512:128"
        ) from None
    return n_train, n_test


@contextlib.contextmanager
def substitute(n_train: int | None = None, n_test: int | None = None) -> Iterator[None]:
    """Within the block, real data sets load as their stand-ins (of these sizes; None = real size)."""
    old = os.environ.get(ENV)
    os.environ[ENV] = "1" if n_train is None and n_test is None else f"{n_train or 0}:{n_test or 0}"
    try:
        yield
    finally:
        if old is None:
            os.environ.pop(ENV, None)
        else:
            os.environ[ENV] = old


def _rng(name: str, seed: int) -> np.random.Generator:
    return np.random.default_rng([seed, zlib.crc32(name.encode())])


@functools.lru_cache(maxsize=6)
def fake(name: str, n_train: int | None = None, n_test: int | None = None, seed: int = 0) -> Dataset:
    """The stand-in for the real set ``name`` (``n_train``/``n_test`` examples; None or 0 = the real size)."""
    if name not in REAL:
        raise KeyError(f"no stand-in for {name!r} (known: {', '.join(REAL)})")
    shape, real_train, real_test = REAL[name]
    rng = _rng(name, seed)
    arrays = []
    for n in (n_train or real_train, n_test or real_test):
        x = np.frombuffer(rng.bytes(n * int(np.prod(shape))), dtype=np.uint8).reshape(n, *shape)
        arrays += [
            np.multiply(x, np.float32(1 / 255), dtype=np.float32),
            rng.integers(0, 10, n, dtype=np.int64),
        ]
    return Dataset(name, *arrays, n_classes=10, meta={"source": f"fake:{name} (seeded noise, seed {seed})"})


def text_bytes(path: str, n: int | None = None, seed: int = 0) -> np.ndarray:
    """Byte tokens (int64 0..255) standing in for the text file ``path``: ``n`` of them (None: TEXT_BYTES)."""
    return _rng(str(path), seed).integers(0, 256, n or TEXT_BYTES, dtype=np.int64)


for _name in REAL:
    register(f"fake:{_name}")(functools.partial(fake, _name))
