"""Seeds in parallel processes (one torch thread each) against one process with all threads.

    python benchmarks/parallel_seeds.py [--seeds 4] [--epochs 10]

The workload is ELR's default run (cnn1d on MNIST-1D), shortened. Prints wall time per layout and the
speed-up of processes over threads. The suite uses the faster layout (``train.run_many``).
"""

from __future__ import annotations

import argparse
import time

import torch

from replikit import processes, train
from replikit.methods import elr


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seeds", type=int, default=4)
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--width", type=int, default=64, help="CNN channels (ELR default 64)")
    parser.add_argument("--batch", type=int, default=256, help="batch size (ELR default 256)")
    args = parser.parse_args()
    cores = processes.cores()
    cfg = elr.Config(epochs=args.epochs, sweep_seeds=0, width=args.width, batch_size=args.batch).model_dump()
    tasks = [dict(cfg=cfg, arm="elr", rep=r, noise_rate=0.4) for r in range(args.seeds)]

    torch.set_num_threads(cores)
    t = time.perf_counter()
    threads = [elr.run_one(**task) for task in tasks]  # one process, all cores' threads
    t_threads = time.perf_counter() - t

    t = time.perf_counter()
    procs = train.run_many(elr.run_one, tasks, workers=cores)
    t_procs = time.perf_counter() - t

    same = all(a["final_test_acc"] == b["final_test_acc"] for a, b in zip(threads, procs))
    # (not identical in general: the thread count changes float reduction order; run_many pins 1 thread)
    print(
        f"{args.seeds} runs of {args.epochs} epochs on {cores} cores (cnn1d width {args.width}, batch {args.batch})"
    )
    print(f"  1 process x {cores} threads : {t_threads:.1f} s")
    print(f"  {cores} processes x 1 thread: {t_procs:.1f} s (includes process start-up)")
    print(f"  speed-up of processes: {t_threads / t_procs:.2f}x; bit-identical results: {same}")


if __name__ == "__main__":
    main()
