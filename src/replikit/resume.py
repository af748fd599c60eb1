"""Resuming: finished runs are recorded, unfinished ones checkpoint, so a killed job loses little.

A **run store** is a folder (``.replikit/runs/<method>-<key>/``, outside DVC's outputs and git) that
:func:`replikit.train.run_many` consults while it is active:

- every finished run (one task of ``run_many``) is recorded as ``<task key>.pkl``, written atomically
  by the process that ran it; a rerun returns the record instead of training again. This is what lets
  :mod:`replikit.sequential` add seeds without redoing the ones it has, and a killed ``dvc repro``
  restart where it stopped;
- an unfinished run checkpoints inside :func:`replikit.train.fit` (models, optimiser, batch-order
  generator, torch's global RNG, history, and the method's own state such as ELR's targets) every
  ``REPLIKIT_CHECKPOINT_S`` seconds (default 60) and at the end of each ``fit`` call; on restart each
  ``fit`` of the run picks up from its checkpoint, so a resumed run ends with the same numbers as one
  never interrupted (same machine, same thread count).

The task key hashes the run function's name and its arguments, leaving out what only changes how many
seeds run or how they are spread (``n_seeds``, ``n_max``, ``seed_batch``, ``workers``); the store's
folder name hashes the method's resolved config and the package's source, so edited code or parameters
never reuse stale records. The store is removed once the method's results are saved (:func:`clear`).
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
import pickle
import shutil
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch

from replikit import config

STORE_ENV = "REPLIKIT_RUN_STORE"
EVERY_ENV = "REPLIKIT_CHECKPOINT_S"
DEFER_CLEAR_ENV = config.DEFER_CLEAR_ENV  # set by the runner: it clears the store after its swap

# config keys that change how many runs there are or where they run, never what one run computes
NOT_IN_KEY = ("n_seeds", "n_max", "seed_batch", "workers")
MISSING = object()


def _canonical(obj: Any) -> Any:
    if isinstance(obj, dict):
        return {
            str(k): _canonical(v)
            for k, v in sorted(obj.items(), key=lambda kv: str(kv[0]))
            if not (k in NOT_IN_KEY and "profile" in obj)
        }
    if isinstance(obj, (list, tuple)):
        return [_canonical(v) for v in obj]
    if isinstance(obj, float):
        return repr(obj)
    if isinstance(obj, (str, int, bool)) or obj is None:
        return obj
    return repr(obj)


def task_key(fn, task: dict[str, Any]) -> str:
    blob = json.dumps({"fn": f"{fn.__module__}.{fn.__qualname__}", "task": _canonical(task)}, sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:20]


@functools.cache
def source_hash() -> str:
    """sha256 of the package's Python source: a code change starts a fresh store (read once per process,
    so the store a notebook's runs used is the one its save removes, even if the code is edited meanwhile)."""
    h = hashlib.sha256()
    pkg = Path(__file__).resolve().parent
    for f in sorted(pkg.rglob("*.py")):
        h.update(str(f.relative_to(pkg)).encode())
        h.update(f.read_bytes())
    return h.hexdigest()[:12]


def store_folder(root: Path, method: str, cfg) -> Path:
    """Where the runs of ``method`` with config ``cfg`` are recorded."""
    dump = {k: v for k, v in cfg.model_dump(mode="json").items() if k not in NOT_IN_KEY}
    key = hashlib.sha256(json.dumps([dump, source_hash()], sort_keys=True).encode()).hexdigest()[:12]
    return root / ".replikit" / "runs" / f"{method}-{key}"


def active() -> Path | None:
    folder = os.environ.get(STORE_ENV)
    return Path(folder) if folder else None


@contextmanager
def using(folder: Path):
    """Make ``folder`` the active run store here and in the worker processes started meanwhile."""
    before = os.environ.get(STORE_ENV)
    folder.mkdir(parents=True, exist_ok=True)
    os.environ[STORE_ENV] = str(folder)
    try:
        yield folder
    finally:
        if before is None:
            os.environ.pop(STORE_ENV, None)
        else:
            os.environ[STORE_ENV] = before


def clear(folder: Path | None = None) -> None:
    """Remove a store (default: the active one) once its method's results are safely saved."""
    folder = folder or active()
    if folder is not None and folder.name != "runs":
        shutil.rmtree(folder, ignore_errors=True)


def _atomic_pickle(path: Path, obj: Any) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with open(tmp, "wb") as f:
        pickle.dump(obj, f, protocol=pickle.HIGHEST_PROTOCOL)
    os.replace(tmp, path)


def load_record(folder: Path, key: str) -> Any:
    path = folder / f"{key}.pkl"
    if not path.is_file():
        return MISSING
    try:
        with open(path, "rb") as f:
            return pickle.load(f)
    except (EOFError, pickle.UnpicklingError):  # cannot happen with the atomic write; be safe anyway
        return MISSING


# ------------------------------------------------------------------ one run, recorded

_current: dict[str, Any] = {}  # the run executing in this process: its store, key and fit counter


def call(fn, task: dict[str, Any], folder: str | None, key: str | None, keep: bool = True) -> Any:
    """``fn(**task)``; with a store, checkpoint inside it and record the result (runs in a worker).

    ``keep=False`` leaves the record to the caller (a Ray worker on a node without the store's disk).
    """
    if folder is None:
        return fn(**task)
    folder_path = Path(folder)
    _current.update(folder=folder_path, key=key, fits=0)
    try:
        result = fn(**task)
    finally:
        _current.clear()
    if keep:
        record(folder_path, key, result)
    return result


def record(folder: Path, key: str, result: Any) -> None:
    """Record a finished run and drop its checkpoints."""
    folder.mkdir(parents=True, exist_ok=True)
    _atomic_pickle(folder / f"{key}.pkl", result)
    shutil.rmtree(folder / f"{key}.ckpt", ignore_errors=True)


class Checkpointer:
    """Checkpoints of one ``fit`` call of the running task (see the module docstring)."""

    def __init__(self, path: Path):
        self.path = path
        self.every = float(os.environ.get(EVERY_ENV, "60"))
        self.last = time.monotonic()

    def load(self) -> dict[str, Any] | None:
        if not self.path.is_file():
            return None
        return torch.load(self.path, map_location="cpu", weights_only=False)

    def due(self, final: bool) -> bool:
        return final or time.monotonic() - self.last >= self.every

    def save(self, state: dict[str, Any]) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_name(f".{self.path.name}.tmp")
        torch.save(state, tmp)
        os.replace(tmp, self.path)
        self.last = time.monotonic()


def checkpointer() -> Checkpointer | None:
    """The checkpointer of the next ``fit`` call of the running task; None outside a run store."""
    if not _current:
        return None
    n = _current["fits"]
    _current["fits"] = n + 1
    return Checkpointer(_current["folder"] / f"{_current['key']}.ckpt" / f"fit{n}.pt")
