"""Nothing lost: a failed run leaves the last good ``results/<method>/`` byte-identical.

The faults of issue 11: a bad parameter (unknown key, wrong type, out of range), an exception while the
notebook runs, Ctrl-C, and SIGKILL in the middle of a ``dvc repro`` stage or between the two renames
of the swap. The dvc tests share one reproduced smoke copy of the repository (``smoke_repo``).
"""

from __future__ import annotations

import hashlib
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import pandas as pd  # noqa: E402
import pytest  # noqa: E402
from conftest import sh, tool_env  # noqa: E402

from replikit import processes, results, runner  # noqa: E402
from replikit.config import MethodConfig  # noqa: E402


def snapshot(folder: Path) -> dict[str, str]:
    """Every file under ``folder`` by relative path: sha256 of its bytes."""
    return {
        str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


def leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.parent.iterdir() if p.name.startswith(f".{folder.name}."))


def record(out: Path, acc: float, fail_figure: bool = False) -> Path:
    """A small record through results.save; ``fail_figure`` raises while the figures are written."""
    fig = plt.figure()
    if fail_figure:
        fig.savefig = lambda *a, **k: (_ for _ in ()).throw(OSError("disk full (injected)"))
    outcome = results.Outcome(runs=pd.DataFrame({"arm": ["a", "b"], "seed": [0, 0], "acc": [acc, acc + 0.1]}))
    try:
        return results.save(
            "toy", MethodConfig(profile="smoke"), outcome, [], figures={"f": fig}, out_dir=out
        )
    finally:
        plt.close(fig)


def test_save_failing_midway_keeps_the_previous_record(tmp_path):
    out = record(tmp_path / "toy", 0.5)
    before = snapshot(out)
    with pytest.raises(OSError, match="disk full"):
        record(out, 0.9, fail_figure=True)
    assert snapshot(out) == before and leftovers(out) == []
    record(out, 0.9)
    assert snapshot(out) != before and leftovers(out) == []


KILLED_SWAP = """
import os, signal, sys
from pathlib import Path
from replikit import results

new, out = Path(sys.argv[1]), Path(sys.argv[2])
rename = Path.rename
def rename_then_die(self, target):
    if self == new:  # the second rename: the old record is already aside
        os.kill(os.getpid(), signal.SIGKILL)
    return rename(self, target)
Path.rename = rename_then_die
results.swap(new, out)
"""


def test_sigkill_between_the_two_renames_is_undone_on_the_next_start(tmp_path):
    out = record(tmp_path / "toy", 0.5)
    before = snapshot(out)
    new = record(tmp_path / "new", 0.9)
    killed = subprocess.run([sys.executable, "-c", KILLED_SWAP, str(new), str(out)], env=tool_env())
    assert killed.returncode == -signal.SIGKILL
    assert not out.exists() and [p.startswith(".toy.old-") for p in leftovers(out)] == [True]
    assert results.recover(out) == out
    assert snapshot(out) == before and leftovers(out) == []


def test_recover_leaves_a_live_process_alone_and_clears_the_dead(tmp_path):
    out = record(tmp_path / "toy", 0.5)
    live = tmp_path / f".toy.staging-{processes.tag(os.getppid())}"  # pytest's parent: alive while we run
    dead = tmp_path / ".toy.next-999999999-1000.00"
    # a swap that finished but was killed before cleaning up
    stale_old = tmp_path / ".toy.old-999999998-1000.00"
    reused = tmp_path / f".toy.next-{os.getppid()}-1000.00"  # a live pid, given to a later process
    older = tmp_path / ".toy.next-999999997"  # an older version's name: the pid alone
    for folder in (live, dead, stale_old, reused, older):
        folder.mkdir()
    assert results.recover(out) is None
    assert leftovers(out) == [live.name]


# ------------------------------------------------------------------ through `dvc repro`


@pytest.fixture
def repo(smoke_repo):
    """The shared reproduced copy; files a test edits are restored, and DVC must agree nothing changed."""
    before = snapshot(smoke_repo / "results" / "elr")
    yield smoke_repo
    sh("git", "checkout", "--", "params.yaml", "notebooks", cwd=smoke_repo)
    assert snapshot(smoke_repo / "results" / "elr") == before
    assert "up to date" in sh("dvc", "status", "dvc.yaml", cwd=smoke_repo)  # data.dvc: no real data here


def edit(path: Path, old: str, new: str) -> None:
    text = path.read_text()
    assert old in text, f"{old!r} not in {path}"
    path.write_text(text.replace(old, new, 1))


@pytest.mark.slow
def test_unknown_key_in_dvc_repro_keeps_the_results(repo):
    """The issue's example: `noise_rat: 0.4` in the elr section, then `dvc repro`."""
    before = snapshot(repo / "results" / "elr")
    edit(repo / "params.yaml", "  noise_rate: 0.4\n", "  noise_rat: 0.4\n")
    failed = sh("dvc", "repro", cwd=repo, check=False)
    assert "elr.noise_rat: unknown key" in failed and "failed to reproduce 'method@elr'" in failed
    assert snapshot(repo / "results" / "elr") == before


@pytest.mark.slow
@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("noise_rate: high", "elr.noise_rate = 'high': Input should be a valid number"),
        ("noise_rate: 1.5", "elr.noise_rate = 1.5: Input should be less than or equal to 0.95"),
    ],
    ids=["wrong_type", "out_of_range"],
)
def test_bad_value_keeps_the_results(repo, value, message, monkeypatch, capsys):
    """The stage's command itself, in-process (the dvc side is the same as for an unknown key)."""
    before = snapshot(repo / "results" / "elr")
    edit(repo / "params.yaml", "  noise_rate: 0.4\n", f"  {value}\n")
    monkeypatch.chdir(repo)
    assert runner.main(["elr"]) == 2
    assert message in capsys.readouterr().err
    assert snapshot(repo / "results" / "elr") == before


def inject_failure(notebook: Path, message: str) -> None:
    """A cell raising ``message`` right after the parameters cell, where the notebook starts working."""
    text = notebook.read_text()
    params = text.index('# %% tags=["parameters"]')
    after = text.index("\n# %%", params + 1)
    notebook.write_text(f"{text[:after]}\n# %%\nraise RuntimeError({message!r})\n{text[after:]}")


@pytest.mark.slow
def test_exception_in_the_notebook_keeps_the_results_and_shows_the_cause(repo):
    before = snapshot(repo / "results" / "elr")
    inject_failure(repo / "notebooks" / "elr.py", "injected failure")
    failed = sh("dvc", "repro", cwd=repo, check=False)
    assert "notebook failed: RuntimeError: injected failure" in failed
    assert "without encryption" not in failed and "KeyboardInterrupt" not in failed
    assert snapshot(repo / "results" / "elr") == before
    assert leftovers(repo / "results" / "elr") == []


def start_repro(repo: Path) -> subprocess.Popen:
    """`dvc repro` after a parameter change, in its own process group; returns once ELR's notebook runs."""
    edit(repo / "params.yaml", "  noise_rate: 0.4\n", "  noise_rate: 0.6\n")
    logs = repo / "logs"
    for stale in logs.glob("elr.running-*.ipynb"):
        stale.unlink()
    proc = subprocess.Popen(
        ["dvc", "repro"],
        cwd=repo,
        env=tool_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )
    deadline = time.monotonic() + 600  # generous: CI machines are shared
    while not any(logs.glob("elr.running-*.ipynb")):
        assert proc.poll() is None, f"dvc repro ended early:\n{proc.stdout.read()}"
        assert time.monotonic() < deadline, "the notebook never started"
        time.sleep(0.2)
    time.sleep(3)  # inside the run: the kernel is training
    return proc


@pytest.mark.slow
def test_ctrl_c_keeps_the_results(repo):
    before = snapshot(repo / "results" / "elr")
    proc = start_repro(repo)
    os.killpg(proc.pid, signal.SIGINT)  # what a terminal's Ctrl-C does: the whole foreground group
    out, _ = proc.communicate(timeout=300)
    assert proc.returncode != 0, out
    assert snapshot(repo / "results" / "elr") == before
    assert leftovers(repo / "results" / "elr") == []


def process_tree(pid: int):
    import psutil

    root = psutil.Process(pid)
    return [root, *root.children(recursive=True)]


@pytest.mark.slow
def test_sigkill_mid_stage_keeps_the_results(repo):
    import psutil

    before = snapshot(repo / "results" / "elr")
    proc = start_repro(repo)
    # stop the whole tree first (dvc, the runner, the kernel in its own session, its seed workers) so
    # nothing spawns or cleans up, then kill every process at once: as a power cut or the OOM killer would
    tree: dict[int, psutil.Process] = {}
    while True:
        found = {p.pid: p for p in process_tree(proc.pid) if p.pid not in tree}
        if not found:
            break
        for p in found.values():
            p.send_signal(signal.SIGSTOP)
        tree.update(found)
    for p in tree.values():
        p.send_signal(signal.SIGKILL)
    psutil.wait_procs(list(tree.values()), timeout=30)
    proc.communicate(timeout=30)
    assert snapshot(repo / "results" / "elr") == before
