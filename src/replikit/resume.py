"""Resuming: finished runs are recorded, unfinished ones checkpoint, so a killed job loses little.

A **run store** is a folder (``.replikit/runs/<method>-<key>/``, outside DVC's outputs and git) that
:func:`replikit.train.run_many` consults while it is active:

- every finished run (one task of ``run_many``) is recorded as ``<task key>.pkl``, written atomically
  by the process that ran it; a rerun returns the record instead of training again. This is what lets
  :mod:`replikit.sequential` add seeds without redoing the ones it has, and a killed ``dvc repro``
  restart where it stopped;
- an unfinished run checkpoints inside :func:`replikit.train.fit` and :func:`replikit.packed.fit`
  (models, optimiser, batch-order generators, torch's global RNG, history, and the method's own state,
  its ``resume_state``: ELR's targets, an augmentation's or a target draw's generator, a weighting with
  its own optimiser) every ``REPLIKIT_CHECKPOINT_S`` seconds (default 60) and at the end of each ``fit``
  call; on restart each ``fit`` of the run picks up from its checkpoint, so a resumed run ends with the
  same numbers as one never interrupted (same machine, same thread count; tested for every method).

The task key hashes the run function's name and its arguments, leaving out what only changes how many
seeds run or how they are spread (``n_seeds``, ``n_max``, ``seed_batch``, ``workers``); the store's
folder name hashes the method's resolved config and the package's source, so edited code or parameters
never reuse stale records. The store is removed once the method's results are saved (:func:`clear`),
unless another run of the method with the same config is still using it: the last one out removes it.
"""

from __future__ import annotations

import copy
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

from replikit import config, processes

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


USERS = ".users"  # a store's folder of empty files named by the processes inside ``using`` it (processes.tag)


@contextmanager
def using(folder: Path):
    """Make ``folder`` the active run store here and in the worker processes started meanwhile.

    While inside, this process is registered as a user of the store (``.users/<pid>-<start time>``), so that another
    run of the method with the same config that finishes first leaves the store to it (:func:`clear`).
    """
    before = os.environ.get(STORE_ENV)
    folder.mkdir(parents=True, exist_ok=True)
    marker = folder / USERS / processes.tag()
    marker.parent.mkdir(exist_ok=True)
    marker.touch()
    os.environ[STORE_ENV] = str(folder)
    try:
        yield folder
    finally:
        marker.unlink(missing_ok=True)
        if before is None:
            os.environ.pop(STORE_ENV, None)
        else:
            os.environ[STORE_ENV] = before


def users(folder: Path) -> list[int]:
    """The other live processes using the store ``folder``; a killed one's file is ignored."""
    found = (processes.tag_pid(m.name) for m in (folder / USERS).glob("*") if processes.owner_alive(m.name))
    return sorted(pid for pid in found if pid != os.getpid())


def clear(folder: Path | None = None) -> None:
    """Remove a store (default: the active one) once its method's results are safely saved.

    A store that another live run is using (the same method and config at once: a notebook in the lab
    while ``dvc repro`` runs it) is left to that run, which reads back what this one recorded instead of
    training it again, and clears the store when it finishes.
    """
    folder = folder or active()
    if folder is not None and folder.name != "runs" and not users(folder):
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


# ------------------------------------------------------------------ a run's own state


def check_state(state: dict[str, Any]) -> None:
    """Raise unless every value of a ``resume_state`` can be checkpointed: a tensor (its values), a
    ``torch.Generator`` (its state) or an object with ``state_dict()`` and ``load_state_dict()`` (a
    module, a weighting, a batch stream)."""
    for k, v in state.items():
        stateful = callable(getattr(v, "state_dict", None)) and callable(getattr(v, "load_state_dict", None))
        if not isinstance(v, torch.Tensor | torch.Generator) and not stateful:
            raise TypeError(
                f"resume_state[{k!r}] is a {type(v).__name__}: a checkpoint keeps tensors, generators and "
                "objects with state_dict() / load_state_dict()"
            )


def capture(state: dict[str, Any]) -> dict[str, Any]:
    """A copy of a run's named state for a checkpoint (see :func:`check_state`)."""
    out: dict[str, Any] = {}
    for k, v in state.items():
        if isinstance(v, torch.Tensor):
            out[k] = v.detach().clone()
        elif isinstance(v, torch.Generator):
            out[k] = v.get_state()
        else:
            out[k] = copy.deepcopy(v.state_dict())  # later in-place updates must not reach the copy
    return out


def restore(state: dict[str, Any], saved: dict[str, Any]) -> None:
    """Put :func:`capture`'s copy back into the live objects of ``state``, in place."""
    with torch.no_grad():
        for k, v in state.items():
            if isinstance(v, torch.Tensor):
                v.copy_(saved[k])
            elif isinstance(v, torch.Generator):
                v.set_state(saved[k])
            else:
                v.load_state_dict(saved[k])


def held_parameters(state: dict[str, Any]) -> set[int]:
    """ids of the tensors a checkpoint of ``state`` restores: its tensors and its objects' parameters."""
    held = set()
    for v in state.values():
        if isinstance(v, torch.Tensor):
            held.add(id(v))
        elif callable(getattr(v, "parameters", None)):
            held.update(id(p) for p in v.parameters())
    return held


def rng_state() -> dict[str, Any]:
    return {
        "rng": torch.get_rng_state(),
        "cuda_rng": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None,
    }


def set_rng_state(saved: dict[str, Any]) -> None:
    torch.set_rng_state(saved["rng"])
    if saved["cuda_rng"] is not None and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(saved["cuda_rng"])


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
        tmp = self.path.with_name(f".{self.path.name}.{os.getpid()}.tmp")  # two runs of one task at once
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


class Loop:
    """Checkpoints for a method's own training loop (grokking's and critical_periods' batched programs,
    which do not go through ``fit``): the loop's live tensors (``state``, restored in place) and the
    lists it has logged so far.

        loop = resume.Loop({"W": W, "a": a}, total=steps)
        start, logs = loop.resume(device)        # 0 and {} on a fresh run
        for t in range(start, steps):
            ...                                  # update the state, append to the logs
            loop.save_if_due(t + 1, curve=curve) # after step t: resume at t + 1

    Outside a run store it does nothing.
    """

    def __init__(self, state: dict[str, Any], total: int):
        check_state(state)
        self.state, self.total = state, total
        self.ckpt = checkpointer()

    def resume(self, device: torch.device | str | None = None) -> tuple[int, dict[str, Any]]:
        """The step to start from and the logs saved with it; their tensors (alone, or in lists) on
        ``device`` (None: where the checkpoint holds them, the CPU)."""
        saved = self.ckpt.load() if self.ckpt is not None else None
        if saved is None:
            return 0, {}
        restore(self.state, saved["state"])
        set_rng_state(saved)
        return saved["epoch"], {k: _on(v, device) for k, v in saved["logs"].items()}

    def save_if_due(self, step: int, **logs: Any) -> None:
        """Checkpoint the state reached after ``step`` steps with ``logs``, when the interval is up."""
        if self.ckpt is not None and self.ckpt.due(final=False):
            # "epoch" and "epochs" as fit's checkpoints have them: here, the loop's own steps
            state = {"epoch": step, "epochs": self.total, "state": capture(self.state), "logs": logs}
            self.ckpt.save({**state, **rng_state()})


def _on(value: Any, device: torch.device | str | None) -> Any:
    """A logged value on ``device``: a tensor moved, a list of them each moved, anything else as it is."""
    if device is None:
        return value
    if isinstance(value, torch.Tensor):
        return value.to(device)
    if isinstance(value, list):
        return [_on(v, device) for v in value]
    return value
