"""``python -m replikit.data.fetch NAME [NAME ...]``: download real data sets into data/external/.

The only code in the suite that downloads anything; run it by hand for the full profile, then
``dvc commit -f data.dvc`` so data.dvc records exactly which bytes the full runs used.
"""

from __future__ import annotations

import argparse

from replikit.data import real

SETS = {"mnist": ("MNIST", ""), "svhn": ("SVHN", "svhn"), "cifar10": ("CIFAR10", "")}


def fetch(name: str) -> None:
    import torchvision.datasets as tvd

    cls_name, sub = SETS[name]
    root = real._root(None) / sub if sub else real._root(None)
    allow_download = True  # explicit user request: this command exists to download
    for kwargs in (
        ({"split": "train"}, {"split": "test"}) if name == "svhn" else ({"train": True}, {"train": False})
    ):
        getattr(tvd, cls_name)(str(root), download=allow_download, **kwargs)
    print(f"{name}: ready under {root}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("names", nargs="+", choices=sorted(SETS))
    for name in parser.parse_args().names:
        fetch(name)


if __name__ == "__main__":
    main()
