"""Nothing lost: a failed run leaves the last good ``results/<method>/`` byte-identical.

The faults of issue 11: a bad parameter (unknown key, wrong type, out of range), an exception while the
notebook runs, Ctrl-C, and SIGKILL in the middle of a ``dvc repro`` stage or between the two renames
of the swap. The dvc tests share one reproduced smoke copy of the repository (``smoke_repo``).
"""

from __future__ import annotations

import hashlib
import json
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

from replikit import claims, processes, results, resume, runner  # noqa: E402
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


def test_metrics_hold_each_claim_and_the_means_of_the_arms_it_compares(tmp_path):
    """metrics.json: the claim's effect, interval, n and verdict, and the mean of each arm on the metric
    the claim reads from it (the baseline's ``baseline_metric``), nothing else."""
    claim = claims.Claim(
        id="toy.gain",
        paper="Doe et al. 2020",
        quote="New beats old's best.",
        metric="acc",
        treatment="new",
        baseline="old",
        baseline_metric="best_acc",
        delta=0.01,
    )
    runs = pd.DataFrame(
        {
            "arm": ["new"] * 3 + ["old"] * 3,
            "seed": [0, 1, 2] * 2,
            "acc": [0.80, 0.82, 0.84, 0.60, 0.60, 0.60],
            "best_acc": [0.90, 0.90, 0.90, 0.75, 0.76, 0.77],
        }
    )
    judged = claims.judge(claim, runs)
    out = results.save(
        "toy", MethodConfig(profile="smoke"), results.Outcome(runs=runs), [judged], out_dir=tmp_path / "toy"
    )
    metrics = json.loads((out / "metrics.json").read_text())
    assert sorted(metrics) == [
        "new.acc",
        "old.best_acc",
        "toy.gain.ci_high",
        "toy.gain.ci_low",
        "toy.gain.effect",
        "toy.gain.n",
        "toy.gain.verdict",
    ]
    assert metrics["toy.gain.verdict"] == "reproduced" and metrics["toy.gain.n"] == 3
    assert metrics["toy.gain.effect"] == pytest.approx(0.06)
    assert metrics["new.acc"] == pytest.approx(0.82) and metrics["old.best_acc"] == pytest.approx(0.76)


@pytest.mark.parametrize(("deferred", "kept"), [(False, False), (True, True)], ids=["cleared", "deferred"])
def test_save_clears_the_run_store_unless_told_to_defer(tmp_path, monkeypatch, deferred, kept):
    """The runs are safe in the record once it is saved, so save removes their store; the runner, whose
    notebook saves into a folder it swaps in later, sets DEFER_CLEAR_ENV and clears the store itself."""
    store = tmp_path / ".replikit" / "runs" / "toy-0123456789ab"
    monkeypatch.setattr(resume, "store_folder", lambda root, method, cfg: store)
    if deferred:
        monkeypatch.setenv(resume.DEFER_CLEAR_ENV, "1")
    else:
        monkeypatch.delenv(resume.DEFER_CLEAR_ENV, raising=False)
    with resume.using(store):
        resume.record(store, "a-seed0", {"acc": 0.5})  # a finished run
        record(tmp_path / "toy", 0.5)
        assert store.exists() is kept


def dead_tag() -> str:
    """A :func:`processes.tag` (``<pid>-<start>``) of a process that has ended: its leftovers are orphans."""
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()  # its pid is free now (reused only after the kernel's pid range wraps)
    return f"{proc.pid}-{time.time():.2f}"


def partial(out: Path) -> None:
    """What `dvc checkout` leaves of ``out`` when the cache lacks the record: some outs, no verdict.json."""
    out.mkdir()
    (out / "runs.csv").write_text("arm,seed,acc\n")


def test_recover_puts_the_old_record_back_over_a_partial_folder(tmp_path):
    """A kill between the swap's renames, then `dvc checkout`: ``toy/`` exists but is not a record. The
    record set aside goes back in its place, byte-identical; of two old folders, the one without
    verdict.json is never the one put back."""
    out = tmp_path / "toy"
    old = record(tmp_path / "previous", 0.5)
    before = snapshot(old)
    old.rename(tmp_path / f".toy.old-{dead_tag()}")
    partial(out)
    assert results.recover(out) == out
    assert snapshot(out) == before and leftovers(out) == []

    out.rename(tmp_path / f".toy.old-{dead_tag()}")
    cut_short = tmp_path / f".toy.old-{dead_tag()}"  # an old folder whose deletion was killed midway
    partial(cut_short)
    os.utime(cut_short, (1000, 1000))  # the older of the two
    partial(out)
    assert results.recover(out) == out
    assert snapshot(out) == before and leftovers(out) == []


def test_recover_keeps_the_record_when_a_newer_old_folder_was_cut_short(tmp_path):
    """Two old folders, the newer one the remains of a deletion killed midway: the complete record goes
    back (restoring nothing and then clearing both would lose the only record)."""
    out = tmp_path / "toy"
    old = record(tmp_path / "previous", 0.5)
    before = snapshot(old)
    aside = tmp_path / f".toy.old-{dead_tag()}"
    old.rename(aside)
    os.utime(aside, (1000, 1000))  # set aside first: the older of the two
    partial(tmp_path / f".toy.old-{dead_tag()}")
    assert results.recover(out) == out
    assert snapshot(out) == before and leftovers(out) == []


def test_recover_leaves_a_live_swap_in_progress_alone(tmp_path):
    """A live process between its swap's two renames: its old folder is its own, not a record to restore."""
    out = tmp_path / "toy"
    mid_swap = record(tmp_path / "previous", 0.5).rename(tmp_path / f".toy.old-{processes.tag(os.getppid())}")
    assert results.recover(out) is None
    assert not out.exists() and leftovers(out) == [mid_swap.name]


def test_recover_never_puts_an_old_folder_without_verdict_in_place(tmp_path):
    """An old folder without verdict.json is no record: ``toy/`` is not replaced by it."""
    out = tmp_path / "toy"
    partial(tmp_path / f".toy.old-{dead_tag()}")
    partial(out)
    (out / "runs.csv").write_text("arm,seed,acc\na,0,0.5\n")
    assert results.recover(out) is None
    assert (out / "runs.csv").read_text() == "arm,seed,acc\na,0,0.5\n" and leftovers(out) == []


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


def test_save_undoes_a_swap_killed_between_the_two_renames(tmp_path):
    """save recovers first by itself: after a kill between the renames it puts the new record in place,
    and the old one set aside is not left beside it."""
    out = record(tmp_path / "toy", 0.5)
    new = record(tmp_path / "new", 0.7)
    killed = subprocess.run([sys.executable, "-c", KILLED_SWAP, str(new), str(out)], env=tool_env())
    assert killed.returncode == -signal.SIGKILL and not out.exists()
    record(out, 0.9)
    assert pd.read_csv(out / "runs.csv")["acc"][0] == 0.9  # the new record
    assert leftovers(out) == []


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


def inject_pause(notebook: Path, marker: Path) -> None:
    """A cell right after the training cell that touches ``marker``, then waits: the stage is caught with
    its seeds trained and recorded in the run store and nothing saved, however fast or busy the machine."""
    text = notebook.read_text()
    after = text.index("\n# %%", text.index("sequential.replicate("))
    pause = f"import pathlib, time\npathlib.Path({str(marker)!r}).touch()\ntime.sleep(600)"
    notebook.write_text(f"{text[:after]}\n# %%\n{pause}\n{text[after:]}")


def start_repro(repo: Path, marker: Path) -> subprocess.Popen:
    """`dvc repro` after a parameter change, in its own process group; returns once ELR's notebook is
    inside the run (:func:`inject_pause`), not after a guessed delay that a fast run may outlast."""
    edit(repo / "params.yaml", "  noise_rate: 0.4\n", "  noise_rate: 0.6\n")
    inject_pause(repo / "notebooks" / "elr.py", marker)
    proc = subprocess.Popen(
        ["dvc", "repro"],
        cwd=repo,
        env=tool_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
        # a terminal's foreground job takes Ctrl-C even when pytest was started in the background, where
        # the shell set SIGINT to ignored, and an ignored signal stays ignored across fork and exec
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )
    deadline = time.monotonic() + 600  # generous: CI machines are shared
    while not marker.exists():
        assert proc.poll() is None, f"dvc repro ended early:\n{proc.stdout.read()}"
        assert time.monotonic() < deadline, "the notebook never reached the pause"
        time.sleep(0.2)
    return proc


@pytest.mark.slow
def test_ctrl_c_keeps_the_results(repo, tmp_path):
    before = snapshot(repo / "results" / "elr")
    proc = start_repro(repo, tmp_path / "paused")
    os.killpg(proc.pid, signal.SIGINT)  # what a terminal's Ctrl-C does: the whole foreground group
    try:
        out, _ = proc.communicate(timeout=300)
    finally:
        if proc.poll() is None:  # still running: stop it, so its lock does not fail the tests after it
            os.killpg(proc.pid, signal.SIGKILL)
    assert proc.returncode != 0, out
    assert snapshot(repo / "results" / "elr") == before
    assert leftovers(repo / "results" / "elr") == []


def process_tree(pid: int):
    import psutil

    root = psutil.Process(pid)
    return [root, *root.children(recursive=True)]


@pytest.mark.slow
def test_sigkill_mid_stage_keeps_the_results(repo, tmp_path):
    import psutil

    before = snapshot(repo / "results" / "elr")
    proc = start_repro(repo, tmp_path / "paused")
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
