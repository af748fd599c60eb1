"""A killed packed run resumes on the device to the numbers of an uninterrupted one (or as close as the
device's own rerun comes).

    python benchmarks/gpu_resume.py                                  # on the GPU machine
    python benchmarks/gpu_resume.py --device cpu --methods elr       # a CPU check

``tests/test_resume_methods.py`` checks every method's resume on the CPU; this asks the same of the CUDA
path (CUDA generator states, optimiser state on the device, bf16 autocast). Per method, at smoke size,
one seed, packed (``--pack``), a checkpoint after every epoch, inside a fresh run store:

1. the run uninterrupted, twice: how close does the device come to itself? (0 where its kernels are
   deterministic);
2. the run "killed" by an exception right after its middle mid-fit checkpoint, then run again in the same
   store: it must resume (no epoch saved twice) and end within the first step's difference of the
   uninterrupted run.

Prints one table row per method (max absolute difference over the runs table and the history) and, with
``--out``, writes ``.md`` and ``.json``. Exit status 1 when a run does not resume or ends further from
the uninterrupted run than the device's own rerun.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))  # the GPU machine may run this without installing replikit
os.environ.setdefault("REPLIKIT_PROGRESS", "0")

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from replikit import resume  # noqa: E402
from replikit.methods import get_method, load_config  # noqa: E402

# at least three epochs in a fit call, so that there is a middle to stop in (as tests/test_resume_methods)
EPOCHS = {"elr": {"epochs": 3}, "downstream_scaling": {"ft_epochs": 3}, "sla": {"epochs": 3, "few_epochs": 3}}


class Killed(BaseException):
    """Stands for SIGKILL: a BaseException, so that no method's error handling catches it."""


def max_diff(a: pd.DataFrame, b: pd.DataFrame) -> float:
    """Largest absolute difference between the numeric cells of two tables of one shape (inf otherwise)."""
    if a.shape != b.shape or list(a.columns) != list(b.columns):
        return float("inf")
    num = a.select_dtypes("number").columns
    if not (a.drop(columns=num).astype(str).values == b.drop(columns=num).astype(str).values).all():
        return float("inf")
    x, y = a[num].to_numpy(float), b[num].to_numpy(float)
    same_nan = np.isnan(x) == np.isnan(y)
    if not same_nan.all():
        return float("inf")
    return float(np.nan_to_num(np.abs(x - y)).max()) if x.size else 0.0


def outcome_diff(a, b) -> float:
    return max(max_diff(a.runs, b.runs), max_diff(a.history, b.history))


def check(method: str, device: str, pack: int, root: Path) -> dict:
    overrides = {"device": device, "workers": 1, "n_seeds": 1, "pack": pack, **EPOCHS.get(method, {})}
    cfg = load_config(method, profile="smoke", overrides=overrides)
    run = get_method(method).run
    saves: list[tuple[str, int, int]] = []
    kill_at: list[int] = []
    real = resume.Checkpointer.save

    def save(self, state):
        real(self, state)
        saves.append((f"{self.path.parent.name}/{self.path.name}", state["epoch"], state["epochs"]))
        mid = [s for s in saves if s[1] < s[2]]
        if state["epoch"] < state["epochs"] and kill_at and len(mid) - 1 == kill_at[0]:
            raise Killed

    resume.Checkpointer.save = save
    try:
        outs = []
        for name in ("whole", "again"):
            saves.clear()
            with resume.using(root / method / name):
                outs.append(run(cfg))
        n_mid = sum(e < n for _, e, n in saves)
        if not n_mid:
            raise RuntimeError(f"{method}: no fit call checkpointed in mid-run")
        kill_at.append(n_mid // 2)
        saves.clear()
        killed = root / method / "killed"
        try:
            with resume.using(killed):
                run(cfg)
            raise RuntimeError(f"{method}: the run was not killed")
        except Killed:
            pass
        kill_at.clear()
        with resume.using(killed):
            resumed = run(cfg)
    finally:
        resume.Checkpointer.save = real
    epochs: dict[str, list[int]] = {}
    for f, e, _ in saves:
        epochs.setdefault(f, []).append(e)
    redone = any(len(set(v)) < len(v) for v in epochs.values())
    rerun, resumed_diff = outcome_diff(outs[0], outs[1]), outcome_diff(outs[0], resumed)
    ok = not redone and resumed_diff <= rerun
    return {
        "method": method,
        "device": device,
        "pack": cfg.pack if "pack" in type(cfg).model_fields else None,
        "checkpoints": n_mid,
        "killed_after": n_mid // 2 + 1,
        "rerun_diff": rerun,
        "resumed_diff": resumed_diff,
        "epoch_saved_twice": redone,
        "ok": ok,
    }


def table(rows: list[dict]) -> str:
    lines = [
        "| method | pack | mid-fit checkpoints | killed after | uninterrupted twice: max diff | killed and "
        "resumed: max diff | ok |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['method']} | {r['pack']} | {r['checkpoints']} | {r['killed_after']} | {r['rerun_diff']:.3g} | "
            f"{r['resumed_diff']:.3g}{' (an epoch saved twice)' if r['epoch_saved_twice'] else ''} | "
            f"{'yes' if r['ok'] else 'NO'} |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--device", default="cuda")
    parser.add_argument(
        "--methods", default="elr,downstream_scaling", help="comma-separated, packing methods"
    )
    parser.add_argument("--pack", type=int, default=4, help="pack width (0: one run at a time)")
    parser.add_argument("--out", type=Path, help="writes OUT.md and OUT.json")
    args = parser.parse_args(argv)
    os.environ[resume.EVERY_ENV] = "0"  # a checkpoint after every epoch
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for method in args.methods.split(","):
            rows.append(check(method, args.device, args.pack, Path(tmp)))
            print(table(rows[-1:]), flush=True)
    text = f"killed and resumed on {args.device}\n\n{table(rows)}"
    print(text)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.with_suffix(".md").write_text(text + "\n")
        args.out.with_suffix(".json").write_text(json.dumps(rows, indent=1))
    return 0 if all(r["ok"] for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
