"""What a method's run leaves behind, written atomically: ``results/<method>/``.

    runs.csv        one row per (arm, seed): the metrics the claims are judged on
    history.csv     one row per (arm, seed, epoch): training curves
    figures/*.png   the notebook's figures
    metrics.json    flat numbers for ``dvc metrics show`` (contract)
    verdict.json    claims, effects, intervals, verdicts, provenance (contract); written last

Everything is written into a staging folder that then replaces the old one (:func:`swap`), so a crash
never leaves a half-written verdict next to stale figures, and a failed run leaves the last good record
as it was. POSIX cannot rename a folder onto a non-empty one, so the swap is two renames (old folder
aside to ``.<name>.old-<tag>``, new folder in; the tag names the process, see
:mod:`replikit.processes`); a process killed between them leaves no ``<name>``,
and :func:`recover` (called by :func:`save` and by the runner before anything else) puts the old one
back. Nothing else ever deletes a complete record.
"""

from __future__ import annotations

import json
import os
import platform
import shutil
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from replikit import processes, resume
from replikit.claims import ClaimResult
from replikit.config import MethodConfig, config_hash, find_root


@dataclass
class Outcome:
    """What ``run(cfg)`` returns: per-run metrics, per-epoch histories and method-specific extras."""

    runs: pd.DataFrame
    history: pd.DataFrame = field(default_factory=pd.DataFrame)
    extras: dict[str, Any] = field(default_factory=dict)
    runtime_s: float = 0.0
    device: str = "cpu"

    def __post_init__(self) -> None:
        missing = {"arm", "seed"} - set(self.runs.columns)
        if missing:
            raise ValueError(f"runs lacks columns {sorted(missing)}")


class Timer:
    """``with Timer() as t: ...``; then ``t.seconds``."""

    def __enter__(self) -> Timer:
        self.start = time.perf_counter()
        return self

    def __exit__(self, *exc) -> None:
        self.seconds = time.perf_counter() - self.start


# What a run reads from the repository: its code, parameters and pipeline. Other tracked files (the
# README, tests, benchmarks) cannot change its numbers, and dvc.lock, results/ and reports/ are what a
# running `dvc repro` itself rewrites while later stages run.
RUN_SOURCES = ("src", "notebooks", "params.yaml", "dvc.yaml", "data.dvc", "pyproject.toml", "constraints.txt")


def git_commit(root: Path) -> str:
    """The commit the run's source is at, ``-dirty`` when a tracked file it reads (:data:`RUN_SOURCES`:
    an edited module, notebook or params.yaml, say) differs from it."""
    try:
        sha = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True, check=True
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no", "--", *(f":/{p}" for p in RUN_SOURCES)],
            cwd=root,
            capture_output=True,
            text=True,
        ).stdout.strip()
        return sha + ("-dirty" if dirty else "")
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def machine() -> dict[str, str | int]:
    """The hardware a run's numbers came from. Float reduction order, hence the numbers, depends on it
    (the CPU's vector instructions, the GPU), so a rerun on another machine is a fresh draw of its seeds."""
    import torch

    cpu = platform.processor() or platform.machine()
    try:
        lines = Path("/proc/cpuinfo").read_text().splitlines()
        cpu = next((ln.split(":", 1)[1].strip() for ln in lines if ln.startswith("model name")), cpu)
    except OSError:  # not Linux
        pass
    return {
        "cpu": cpu,
        "cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "cores": processes.cores(),
        "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else "none",
    }


def versions() -> dict[str, str]:
    from importlib.metadata import PackageNotFoundError, version

    out = {"python": platform.python_version()}
    for pkg in ("replikit", "torch", "numpy", "scipy", "mnist1d", "scikit-learn"):
        try:
            out[pkg] = version(pkg)
        except PackageNotFoundError:
            out[pkg] = "missing"
    return out


def flat_metrics(runs: pd.DataFrame, claims: list[ClaimResult]) -> dict[str, float | int | str]:
    """What a reader compares across experiments: each claim's effect, interval, n and verdict, and the
    means of the arms and metrics the claims compare. Per-run detail stays in runs.csv."""
    out: dict[str, float | int | str] = {}
    compared: set[tuple[str, str]] = set()
    for r in claims:
        d = r.to_json()
        for k in ("effect", "ci_low", "ci_high"):
            if d[k] is not None:
                out[f"{r.claim.id}.{k}"] = d[k]
        out[f"{r.claim.id}.n"] = r.n_seeds
        out[f"{r.claim.id}.verdict"] = r.verdict
        c = r.claim
        if c.statistic is None:
            compared.add((c.treatment, c.metric))
            if c.baseline is not None:
                compared.add((c.baseline, c.baseline_metric or c.metric))
    for arm, metric in sorted(compared):
        values = runs.loc[runs["arm"] == arm, metric] if metric in runs else pd.Series(dtype=float)
        if values.notna().any():
            out[f"{arm}.{metric}"] = round(float(values.mean()), 6)
    return out


def _write_json(path: Path, obj: Any) -> None:
    path.write_text(json.dumps(obj, indent=2, allow_nan=False) + "\n")


def default_out_dir(method: str) -> Path:
    """Interactive runs write to scratch/<method>/ and leave DVC's results/ alone."""
    return find_root() / "scratch" / method


def _orphan(path: Path, kind: str) -> bool:
    """Whether the process that named a ``.<name>.<kind>-<tag>`` folder is gone (or is this one)."""
    owner = path.name.split(f".{kind}-", 1)[-1]
    return processes.tag_pid(owner) == os.getpid() or not processes.owner_alive(owner)


def _leftovers(out: Path, kind: str) -> list[Path]:
    """``.<name>.<kind>-<tag>`` folders beside ``out``, oldest first."""
    found = [p for p in out.parent.glob(f".{out.name}.{kind}-*") if p.is_dir()]
    return sorted(found, key=lambda p: p.stat().st_mtime)


def recover(out: str | Path) -> Path | None:
    """Undo what a killed :func:`swap` or :func:`save` left beside ``out``; return ``out`` if restored.

    A kill between the swap's two renames leaves no ``out`` (or, after ``dvc checkout``, an ``out``
    without ``verdict.json``) and the previous record in ``.<name>.old-<tag>``: it goes back, the newest
    complete one of a process that is gone (an old folder without ``verdict.json`` is the remains of a
    deletion cut short, never a record; a live process's is its own swap in progress). Old folders of a
    completed swap, and staging folders of processes that are gone, are deleted.
    """
    out = Path(out)
    restored = None
    olds = _leftovers(out, "old")
    records = [p for p in olds if (p / "verdict.json").is_file() and _orphan(p, "old")]
    if records and not (out / "verdict.json").is_file():
        if out.exists():
            shutil.rmtree(out)  # a partial folder (cached outs checked out without the cache: false ones)
        records[-1].rename(out)
        olds.remove(records[-1])
        restored = out
    for kind in ("old", "staging", "next"):
        for leftover in olds if kind == "old" else _leftovers(out, kind):
            if _orphan(leftover, kind):
                shutil.rmtree(leftover, ignore_errors=True)
    return restored


def swap(new: Path, out: Path) -> None:
    """Put the complete folder ``new`` at ``out``, replacing what was there (see the module docstring)."""
    old = out.parent / f".{out.name}.old-{processes.tag()}"
    shutil.rmtree(old, ignore_errors=True)
    if out.exists():
        out.rename(old)
    new.rename(out)  # a kill before this line: recover() renames `old` back
    shutil.rmtree(old, ignore_errors=True)


def save(
    method: str,
    cfg: MethodConfig,
    outcome: Outcome,
    claims: list[ClaimResult],
    figures: dict[str, Any] | None = None,
    out_dir: str | Path | None = None,
) -> Path:
    """Write the run's record to ``out_dir`` (default ``scratch/<method>``), atomically; return it."""
    out = Path(out_dir) if out_dir else default_out_dir(method)
    root = find_root()
    out.parent.mkdir(parents=True, exist_ok=True)
    recover(out)
    stage = out.parent / f".{out.name}.staging-{processes.tag()}"
    shutil.rmtree(stage, ignore_errors=True)
    stage.mkdir()
    try:
        outcome.runs.to_csv(stage / "runs.csv", index=False)
        outcome.history.to_csv(stage / "history.csv", index=False)  # a DVC out: written even when empty
        if figures:
            (stage / "figures").mkdir()
            for name, fig in figures.items():
                fig.savefig(stage / "figures" / f"{name}.png", dpi=110, bbox_inches="tight")
        _write_json(stage / "metrics.json", flat_metrics(outcome.runs, claims))
        verdict = {
            "method": method,
            "profile": cfg.profile,
            "evidence": cfg.evidence,
            "seeds": {"role": cfg.seed.role, "base": cfg.seed.base},
            "claims": [r.to_json() for r in claims],
            "runtime_s": round(outcome.runtime_s, 2),
            "device": outcome.device,
            "versions": versions(),
            "machine": machine(),
            "git": git_commit(root),
            "config": cfg.model_dump(mode="json"),
            "config_hash": config_hash(cfg),
            "figures": sorted(f"figures/{n}.png" for n in (figures or {})),
        }
        _write_json(stage / "verdict.json", verdict)  # last: its presence marks a complete record
        swap(stage, out)
    except BaseException:
        shutil.rmtree(stage, ignore_errors=True)
        raise
    if not os.environ.get(resume.DEFER_CLEAR_ENV):  # the runner clears it after its own final swap
        resume.clear(resume.store_folder(root, method, cfg))  # the runs are safe in the record now
    return out
