"""Runs packed on one GPU: the same numbers for any number of concurrent runs, and how much faster.

    python benchmarks/gpu_packing.py                      # on the GPU machine: 16 ELR runs, 1 vs 8 workers
    python benchmarks/gpu_packing.py --device cpu --runs 2 --workers 2 --epochs 1   # a CPU check

``train.run_many`` runs each task in its own worker process (one torch thread each); on CUDA those
processes share the GPU. Prints the wall time of the same tasks with 1 worker and with ``--workers``,
and whether every run's history is bit-identical between the two.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))
os.environ.setdefault("REPLIKIT_PROGRESS", "0")

from replikit import train  # noqa: E402
from replikit.methods import elr, load_config  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--runs", type=int, default=16)
    parser.add_argument("--workers", type=int, default=8)
    parser.add_argument("--epochs", type=int, default=10)
    args = parser.parse_args(argv)
    cfg = load_config("elr", profile="default", overrides={"epochs": args.epochs, "device": args.device})
    tasks = [
        {"cfg": cfg.model_dump(), "arm": arm, "rep": r, "noise_rate": cfg.noise_rate}
        for r in range(args.runs // 2)
        for arm in ("ce", "elr")
    ]
    times, out = {}, {}
    for workers in (1, args.workers):
        t = time.perf_counter()
        out[workers] = train.run_many(elr.run_one, tasks, workers=workers, device=args.device)
        times[workers] = time.perf_counter() - t
    same = all(
        a["history"] == b["history"] or str(a["history"]) == str(b["history"])
        for a, b in zip(out[1], out[args.workers])
    )
    print(
        f"| ELR runs ({args.epochs} epochs, MNIST-1D) on {args.device} | 1 worker | {args.workers} workers | "
        "identical histories |"
    )
    print("|---|---|---|---|")
    print(
        f"| {len(tasks)} runs | {times[1]:.1f} s | {times[args.workers]:.1f} s "
        f"({times[1] / times[args.workers]:.1f}x) | {same} |"
    )
    return 0 if same else 1


if __name__ == "__main__":
    sys.exit(main())
