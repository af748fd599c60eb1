"""``python -m replikit.data.prepare [OUT]``: write the embedded data sets to ``data/default/``.

The bytes are identical on every rerun, so the DVC stages downstream stay cached.
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
from pathlib import Path

from replikit.data.embedded import EMBEDDED, PREPARED


def prepare(out: Path) -> list[Path]:
    out.mkdir(parents=True, exist_ok=True)
    written = []
    for name, build in EMBEDDED.items():
        ds = build()
        with tempfile.TemporaryDirectory(dir=out) as tmp:  # write whole, then swap in
            ds.save(Path(tmp) / name)
            final = out / name
            if final.exists():
                shutil.rmtree(final)
            (Path(tmp) / name).rename(final)
        written.append(final)
        print(f"{final}: train {ds.x_train.shape}, test {ds.x_test.shape}")
    return written


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("out", nargs="?", default=str(PREPARED))
    prepare(Path(parser.parse_args().out))


if __name__ == "__main__":
    main()
