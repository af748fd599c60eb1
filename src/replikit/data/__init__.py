"""Named data sets: ``load(name, **options) -> Dataset``.

Embedded sets (offline, deterministic, the default and smoke profiles):
    mnist1d   MNIST-1D from the ``mnist1d`` generator (``make_dataset``, never its URL download)
    digits    scikit-learn's bundled 8x8 digits
Real sets (full profile), read by their torchvision classes from ``data/external/`` (tracked by
data.dvc; ``python -m replikit.data.fetch NAME`` downloads them once, explicitly):
    mnist, svhn, cifar10
Stand-ins of the real sets (their shapes and dtypes, seeded noise; :mod:`replikit.data.fake`):
    fake:mnist, fake:svhn, fake:cifar10    and, with ``REPLIKIT_FAKE_DATA`` set, in place of the real ones

``python -m replikit.data.prepare`` writes the embedded sets to ``data/default/`` as .npy files
(identical bytes on every rerun); :func:`load` reads them from there when present and otherwise
generates them in memory, with identical arrays either way.

Domain shifts and label noise are plain functions in :mod:`replikit.data.shifts` and
:mod:`replikit.data.noise`, seeded by the caller.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch


@dataclass
class Dataset:
    """Train/test arrays of one data set. ``x``: float32 features, ``y``: int64 labels."""

    name: str
    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    n_classes: int
    meta: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        for split in ("train", "test"):
            x, y = getattr(self, f"x_{split}"), getattr(self, f"y_{split}")
            if len(x) != len(y):
                raise ValueError(f"{self.name}: {len(x)} inputs but {len(y)} labels in {split}")
            if len(y) and (y.min() < 0 or y.max() >= self.n_classes):
                raise ValueError(f"{self.name}: {split} labels outside 0..{self.n_classes - 1}")
        if not np.isfinite(self.x_train).all() or not np.isfinite(self.x_test).all():
            raise ValueError(f"{self.name}: inputs contain NaN or inf")

    @property
    def input_shape(self) -> tuple[int, ...]:
        return tuple(self.x_train.shape[1:])

    def tensors(self, device: torch.device | str = "cpu") -> dict[str, torch.Tensor]:
        """All splits as tensors resident on ``device`` (x float32, y int64); see ``train.to_device``."""
        from replikit.train import to_device

        device = torch.device(device)
        return {
            "x_train": to_device(self.x_train, device, torch.float32),
            "y_train": to_device(self.y_train, device, torch.int64),
            "x_test": to_device(self.x_test, device, torch.float32),
            "y_test": to_device(self.y_test, device, torch.int64),
        }

    def save(self, folder: Path) -> None:
        """Write as .npy files (np.save is byte-deterministic, unlike zipped .npz)."""
        folder.mkdir(parents=True, exist_ok=True)
        for key in ("x_train", "y_train", "x_test", "y_test"):
            np.save(folder / f"{key}.npy", getattr(self, key), allow_pickle=False)

    @classmethod
    def read(cls, name: str, folder: Path, n_classes: int) -> Dataset:
        try:
            arrays = {
                k: np.load(folder / f"{k}.npy", allow_pickle=False)
                for k in ("x_train", "y_train", "x_test", "y_test")
            }
            return cls(name, n_classes=n_classes, meta={"source": str(folder)}, **arrays)
        except (OSError, ValueError, EOFError) as err:
            raise ValueError(
                f"{folder} is damaged ({err}); rebuild it with `dvc repro prepare` "
                f"(or `python -m replikit.data.prepare`)"
            ) from None


_REGISTRY: dict[str, Callable[..., Dataset]] = {}


def register(name: str) -> Callable[[Callable[..., Dataset]], Callable[..., Dataset]]:
    def wrap(fn: Callable[..., Dataset]) -> Callable[..., Dataset]:
        if name in _REGISTRY:
            raise ValueError(f"data set {name!r} registered twice")
        _REGISTRY[name] = fn
        return fn

    return wrap


def names() -> list[str]:
    return sorted(_REGISTRY)


def load(name: str, **options: Any) -> Dataset:
    """The data set ``name``; ``options`` go to its builder (e.g. ``root=`` for real sets)."""
    if name not in _REGISTRY:
        raise KeyError(f"unknown data set {name!r} (known: {', '.join(names())})")
    if name in fake.REAL and (sizes := fake.active()) is not None:
        return fake.fake(name, *sizes)
    return _REGISTRY[name](**options)


def split(n: int, fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Random (first, second) index split of ``range(n)``; ``fraction`` goes to the second part."""
    perm = np.random.default_rng(seed).permutation(n)
    cut = n - int(round(n * fraction))
    return np.sort(perm[:cut]), np.sort(perm[cut:])


from replikit.data import embedded, fake, real  # noqa: E402,F401  (registers the sets)
