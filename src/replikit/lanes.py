"""``make repro-lanes``: ``dvc repro`` on a GPU machine in two lanes, the GPU's and the CPU cores'.

``dvc repro`` runs one stage after another. On a GPU machine that leaves the GPU idle while a method
pinned to the CPU cores (``device: cpu`` in params.yaml, as grokking and critical_periods are) runs, and
the cores idle while the GPU works. Here the method stages run in two lanes side by side:

- the **GPU lane**: the methods whose device at the profile is ``auto`` or ``cuda``, one after another,
  on ``--gpu-cores`` of the CPU cores (their kernels and pack workers only launch GPU work);
- the **cores lane**: the methods params.yaml pins to ``cpu``, one after another, on the other cores
  (``workers: 0`` then means one worker per core of the lane).

Each stage is ``dvc repro -s method@METHOD``: DVC runs it exactly as ``dvc repro`` would, records it in
dvc.lock (two lanes' updates wait for each other's lock) and skips it when nothing changed. ``prepare``
runs first and a plain ``dvc repro`` last (the report, and anything a lane left stale). A failed stage is
reported, its lane goes on, its last good results stay (the runner's swap), and the report waits for a
rerun; the exit status says whether all went well. Ctrl-C or a kill (SIGTERM) stops both lanes' stages
with their kernels and workers; run it again and they resume from their run stores. Without CUDA there is one lane,
and this is ``dvc repro``. Which methods to pin to the cores on a GPU machine is measured, not guessed:
``benchmarks/gpu_suite.py --lanes`` times every method in both places and prints the placement that
ends the later lane first.

    python -m replikit.lanes            # or: make repro-lanes
    python -m replikit.lanes --dry      # the plan only
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

from replikit.config import find_root, read_params


def pinned_device(params: dict, method: str, profile: str) -> str | None:
    """The device params.yaml sets for ``method`` at ``profile`` (the profile's value first), or None."""
    section = params.get(method) or {}
    at_profile = (section.get("profiles") or {}).get(profile) or {}
    return at_profile.get("device", section.get("device"))


def plan(params: dict, cuda: bool, profile: str | None = None) -> dict[str, list[str]]:
    """The two lanes' methods, in params.yaml's order: a device of ``cpu`` (or any device without CUDA)
    goes to the cores, ``auto`` and ``cuda`` to the GPU."""
    profile = profile or params.get("profile", "default")
    lanes: dict[str, list[str]] = {"gpu": [], "cores": []}
    for method in params.get("methods") or []:
        device = str(pinned_device(params, method, profile) or "auto")
        lanes["gpu" if cuda and device != "cpu" else "cores"].append(method)
    return lanes


def split_cores(available: list[int], gpu_cores: int) -> tuple[list[int], list[int]]:
    """The GPU lane's CPU cores and the cores lane's (which keeps at least one)."""
    if gpu_cores < 1 or len(available) <= gpu_cores:
        raise SystemExit(f"--gpu-cores {gpu_cores} leaves no core to the cores lane ({len(available)} here)")
    return available[:gpu_cores], available[gpu_cores:]


def pin_to(cpus: list[int], pid: int = 0) -> None:
    """Pin process ``pid`` (0: this one), and what it starts from then on, to ``cpus``."""
    try:
        os.sched_setaffinity(pid, cpus)
    except OSError:  # a machine that refuses: the lanes share every core, which only costs speed
        pass


_LOCK = threading.Lock()
_STOPPING = threading.Event()


def kill_tree(pid: int) -> None:
    """Kill a process and everything under it. A notebook's kernel runs in a session of its own
    (jupyter_client starts it so), so a process group would miss it and its workers."""
    import psutil

    try:
        root = psutil.Process(pid)
        procs = [root, *root.children(recursive=True)]
    except psutil.NoSuchProcess:
        return
    for proc in procs:
        try:
            proc.kill()
        except psutil.NoSuchProcess:
            pass
    psutil.wait_procs(procs, timeout=5)


def run_lane(
    name: str, methods: list[str], cpus: list[int], dvc: str, root: Path, out: dict, running: dict
) -> None:
    """One lane's stages one after another; ``out[name]`` gets (method, seconds, return code) rows and
    ``running[name]`` holds the stage's process while it runs."""
    rows = out.setdefault(name, [])
    for method in methods:
        t0 = time.perf_counter()
        with _LOCK:  # stop() cannot miss a stage that starts while it kills the others
            if _STOPPING.is_set():
                return
            print(f"[{name}] {method}: started", flush=True)
            proc = subprocess.Popen(
                [dvc, "repro", "-s", f"method@{method}"],
                cwd=root,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                text=True,
            )
            # pinned from here, not by a preexec_fn (unsafe with threads): dvc starts the stage's command
            # only after its own start-up, so the stage and everything it starts inherit the lane's cores
            pin_to(cpus, proc.pid)
            running[name] = proc
        log = proc.communicate()[0]
        running.pop(name, None)
        seconds = round(time.perf_counter() - t0, 1)
        rows.append((method, seconds, proc.returncode))
        if proc.returncode:
            print(f"[{name}] {method}: FAILED after {seconds} s\n{log[-3000:]}", flush=True)
        else:
            ran = "skipped (unchanged)" if "didn't change, skipping" in log else "done"
            print(f"[{name}] {method}: {ran} in {seconds} s", flush=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--gpu-cores", type=int, default=2, help="CPU cores for the GPU lane (default 2)")
    parser.add_argument("--dry", action="store_true", help="print the lanes and run nothing")
    parser.add_argument("--assume-cuda", action="store_true", help=argparse.SUPPRESS)  # tests, on a CPU
    args = parser.parse_args(argv)

    root = find_root()
    params = read_params(root / "params.yaml")
    dvc = shutil.which("dvc") or str(Path(sys.executable).parent / "dvc")
    if args.assume_cuda:
        cuda = True
    else:
        import torch

        cuda = torch.cuda.is_available()
    lanes = plan(params, cuda)
    if not cuda or not lanes["gpu"] or not lanes["cores"]:
        print("one lane (no CUDA here, or nothing pinned to the cores): plain dvc repro", flush=True)
        return 0 if args.dry else subprocess.run([dvc, "repro"], cwd=root).returncode
    gpu_cpus, core_cpus = split_cores(sorted(os.sched_getaffinity(0)), args.gpu_cores)
    print(f"GPU lane on CPU cores {gpu_cpus}: {', '.join(lanes['gpu'])}", flush=True)
    print(f"cores lane on CPU cores {core_cpus}: {', '.join(lanes['cores'])}", flush=True)
    if args.dry:
        return 0
    if subprocess.run([dvc, "repro", "prepare"], cwd=root).returncode:
        return 1
    t0 = time.perf_counter()
    out: dict[str, list] = {}
    running: dict[str, subprocess.Popen] = {}
    threads = [
        threading.Thread(
            target=run_lane, args=(name, lanes[name], cpus, dvc, root, out, running), daemon=True
        )
        for name, cpus in (("gpu", gpu_cpus), ("cores", core_cpus))
    ]

    def stop(*_):  # Ctrl-C or a kill: the stages stop too; rerunning resumes them (nothing is lost)
        with _LOCK:
            _STOPPING.set()
            for proc in list(running.values()):
                kill_tree(proc.pid)
        print("stopped: the running stages were killed; run it again to resume them", flush=True)
        sys.exit(130)

    signal.signal(signal.SIGTERM, stop)
    for t in threads:
        t.start()
    try:
        for t in threads:
            while t.is_alive():
                t.join(0.5)
    except KeyboardInterrupt:
        stop()
    lanes_s = round(time.perf_counter() - t0, 1)
    for name, rows in out.items():
        print(f"{name} lane: {sum(s for _, s, _ in rows):.1f} s over {len(rows)} stages", flush=True)
    failed = [m for rows in out.values() for m, _, rc in rows if rc]
    print(f"both lanes in {lanes_s} s", flush=True)
    if failed:  # a plain dvc repro would run them again, one after another: the user fixes them first
        print(f"failed: {', '.join(failed)} (their last good results are kept); the report waits", flush=True)
        return 1
    return subprocess.run([dvc, "repro"], cwd=root).returncode  # the report, and anything left stale


if __name__ == "__main__":
    sys.exit(main())
