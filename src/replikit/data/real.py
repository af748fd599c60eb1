"""Real data sets for the full profile, read by their torchvision classes from ``data/external/``.

Nothing here downloads unless asked: loading uses ``download=False`` and fails with the command to run
when the files are missing. ``python -m replikit.data.fetch mnist svhn cifar10`` downloads them (the
one place that does), after which ``dvc commit -f data.dvc`` records them.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from pathlib import Path

import numpy as np

from replikit.data import Dataset, register

EXTERNAL = Path("data") / "external"


class MissingDataError(FileNotFoundError):
    """A real data set is not on disk (the default and smoke profiles never need one)."""


# the files torchvision reads for each set, relative to data/external/ (what `fetch` leaves there)
FILES = {
    "mnist": [f"MNIST/raw/{s}-{k}-ubyte" for s in ("train", "t10k") for k in ("images-idx3", "labels-idx1")],
    "svhn": ["svhn/train_32x32.mat", "svhn/test_32x32.mat"],
    "cifar10": [
        f"cifar-10-batches-py/{b}"
        for b in (
            "data_batch_1",
            "data_batch_2",
            "data_batch_3",
            "data_batch_4",
            "data_batch_5",
            "test_batch",
        )
    ],
}


def named_in(cfg) -> list[str]:
    """The real data sets a resolved method config names, in the values it sets explicitly.

    Every string in those values is split into words (``svhn_mnist`` -> svhn, mnist; ``mnist1d`` stays
    one word), so ``dataset: cifar10``, ``task: svhn_mnist`` and ``image_sets: [...]`` are all found.
    Defaults are left out: they name embedded data, except options that only matter once another
    key selects real data (merging's ``image_sets``), and that key is then set too.
    """
    found: set[str] = set()

    def walk(value) -> None:
        if isinstance(value, str):
            found.update(w for w in re.split(r"[^a-z0-9]+", value.lower()) if w in FILES)
        elif isinstance(value, dict):
            for v in value.values():
                walk(v)
        elif isinstance(value, (list, tuple, set)):
            for v in value:
                walk(v)

    walk([getattr(cfg, key) for key in cfg.model_fields_set])
    return sorted(found)


def missing(names: Iterable[str], root: str | Path | None = None) -> list[str]:
    """Those of ``names`` whose files are not all under ``root`` (default: the project's data/external)."""
    root = _root(root)
    return [n for n in names if not all((root / f).is_file() for f in FILES[n])]


def _root(root: str | Path | None) -> Path:
    if root is not None:
        return Path(root)
    from replikit.config import find_root

    return find_root() / EXTERNAL


def _open(
    cls, name: str, root: Path, train: bool | None = None, split: str | None = None, allow_download=False
):
    kwargs = {"train": train} if split is None else {"split": split}
    try:
        return cls(str(root), download=allow_download, **kwargs)
    except RuntimeError as err:  # torchvision's "Dataset not found or corrupted"
        raise MissingDataError(
            f"{name} not found under {root} ({err}). Fetch it once with "
            f"`python -m replikit.data.fetch {name}`, then `dvc commit -f data.dvc`."
        ) from None


def _images(data: np.ndarray, channels_last: bool) -> np.ndarray:
    """uint8 images to float32 in [0, 1], shape (N, C, H, W)."""
    x = np.asarray(data, dtype=np.float32) / 255.0
    if x.ndim == 3:
        return x[:, None]
    return x.transpose(0, 3, 1, 2) if channels_last else x


def _dataset(name, train, test, x_attr, y_attr, channels_last, root) -> Dataset:
    return Dataset(
        name,
        x_train=_images(getattr(train, x_attr), channels_last),
        y_train=np.asarray(getattr(train, y_attr), dtype=np.int64),
        x_test=_images(getattr(test, x_attr), channels_last),
        y_test=np.asarray(getattr(test, y_attr), dtype=np.int64),
        n_classes=10,
        meta={"source": f"torchvision.datasets ({root})"},
    )


@register("mnist")
def mnist(root: str | Path | None = None) -> Dataset:
    """torchvision MNIST: 60,000 / 10,000 grey 28x28 digits, shape (N, 1, 28, 28)."""
    from torchvision.datasets import MNIST

    root = _root(root)
    train, test = (_open(MNIST, "mnist", root, train=t) for t in (True, False))
    return _dataset("mnist", train, test, "data", "targets", channels_last=False, root=root)


@register("svhn")
def svhn(root: str | Path | None = None) -> Dataset:
    """torchvision SVHN (cropped digits): 73,257 / 26,032 colour 32x32, shape (N, 3, 32, 32)."""
    from torchvision.datasets import SVHN

    root = _root(root) / "svhn"
    train, test = (_open(SVHN, "svhn", root, split=s) for s in ("train", "test"))
    return _dataset("svhn", train, test, "data", "labels", channels_last=False, root=root)


@register("cifar10")
def cifar10(root: str | Path | None = None) -> Dataset:
    """torchvision CIFAR-10: 50,000 / 10,000 colour 32x32, shape (N, 3, 32, 32)."""
    from torchvision.datasets import CIFAR10

    root = _root(root)
    train, test = (_open(CIFAR10, "cifar10", root, train=t) for t in (True, False))
    return _dataset("cifar10", train, test, "data", "targets", channels_last=True, root=root)


def to_rgb32(x: np.ndarray) -> np.ndarray:
    """Grey (N, 1, H, W) images to colour 32x32 (N, 3, 32, 32), as in SVHN -> MNIST adaptation."""
    import torch
    import torch.nn.functional as F

    t = torch.as_tensor(x)
    if t.shape[-1] != 32:
        t = F.interpolate(t, size=(32, 32), mode="bilinear", align_corners=False)
    return t.expand(-1, 3, -1, -1).contiguous().numpy()
