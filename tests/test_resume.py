"""Killed runs resume: a run store records finished runs, and fit() checkpoints and resumes an unfinished
one to the same numbers as an uninterrupted run (a real SIGKILL, on the CPU, ELR at smoke size)."""

from __future__ import annotations

import os
import pickle
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest
import torch
from conftest import ROOT

from replikit import resume

RUN_ELR = """
import sys
from replikit import resume, train
from replikit.methods import elr, load_config
cfg = load_config("elr", profile="smoke", overrides={"epochs": 8, "train_subset": 1500})
task = {"cfg": cfg.model_dump(), "arm": "elr", "rep": 0, "noise_rate": cfg.noise_rate}
with resume.using(resume.Path(sys.argv[1])):
    train.run_many(elr.run_one, [task], workers=1, device="cpu")
"""


def run_elr(store: Path, every_s: str) -> subprocess.Popen:
    env = {**os.environ, resume.EVERY_ENV: every_s, "PYTHONPATH": str(ROOT / "src")}
    return subprocess.Popen([sys.executable, "-c", RUN_ELR, str(store)], cwd=ROOT, env=env)


def record(store: Path) -> dict:
    (path,) = store.glob("*.pkl")
    return pickle.loads(path.read_bytes())


@pytest.mark.slow
def test_a_killed_run_resumes_to_the_numbers_of_an_uninterrupted_one(tmp_path):
    whole, killed = tmp_path / "whole", tmp_path / "killed"
    assert run_elr(whole, "0").wait(timeout=300) == 0
    proc = run_elr(killed, "0")  # checkpoint after every epoch
    deadline = time.monotonic() + 300
    ckpt = None
    while time.monotonic() < deadline and proc.poll() is None:
        found = list(killed.glob("*.ckpt/fit0.pt"))
        if found and torch.load(found[0], weights_only=False)["epoch"] >= 3:
            ckpt = found[0]
            break
        time.sleep(0.02)
    assert ckpt is not None, "the run ended before it could be killed mid-way"
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    done_epochs = torch.load(ckpt, weights_only=False)["epoch"]
    assert 3 <= done_epochs < 8 and not list(killed.glob("*.pkl"))
    assert run_elr(killed, "0").wait(timeout=300) == 0  # resumes from the checkpoint
    a, b = record(whole), record(killed)
    # every epoch's loss, accuracy and memorization, bit for bit (NaN where not measured)
    pd.testing.assert_frame_equal(pd.DataFrame(a["history"]), pd.DataFrame(b["history"]), check_exact=True)
    assert (a["final_test_acc"], a["memorized"]) == (b["final_test_acc"], b["memorized"])
    assert not list(killed.glob("*.ckpt/*")), "checkpoints are removed once the run is recorded"


def test_store_keys_ignore_how_many_seeds_run_but_not_what_a_run_computes():
    def fn():
        pass

    base = {"cfg": {"profile": "smoke", "n_seeds": 2, "workers": 1, "lr": 0.1}, "rep": 0}
    same = {"cfg": {"profile": "smoke", "n_seeds": 9, "workers": 4, "lr": 0.1}, "rep": 0}
    other = {"cfg": {"profile": "smoke", "n_seeds": 2, "workers": 1, "lr": 0.2}, "rep": 0}
    assert resume.task_key(fn, base) == resume.task_key(fn, same)
    assert resume.task_key(fn, base) != resume.task_key(fn, other)
    assert resume.task_key(fn, base) != resume.task_key(fn, {**base, "rep": 1})


# ------------------------------------------------------------------ what a checkpoint can hold


def test_capture_and_restore_cover_tensors_generators_and_stateful_objects():
    from replikit import packed

    t = torch.zeros(3)
    gen = torch.Generator().manual_seed(1)
    stream = packed.Batches(torch.arange(10), 4, seed=2)
    stream.next()
    state = {"t": t, "gen": gen, "stream": stream}
    resume.check_state(state)
    saved = resume.capture(state)
    expected = (torch.rand(2, generator=gen), stream.next(), stream.next())
    t.add_(1.0)  # the live objects move on; the copy must not
    resume.restore(state, saved)
    assert torch.equal(t, torch.zeros(3))
    assert torch.equal(torch.rand(2, generator=gen), expected[0])
    assert torch.equal(stream.next(), expected[1]) and torch.equal(stream.next(), expected[2])


def test_resume_state_refuses_what_it_cannot_checkpoint():
    with pytest.raises(TypeError, match=r"resume_state\['step'\] is a list"):
        resume.check_state({"step": [0]})


def test_fit_refuses_to_checkpoint_a_run_whose_optimiser_moves_an_unnamed_tensor(tmp_path):
    from replikit import train

    model, head = torch.nn.Linear(2, 2), torch.nn.Linear(2, 1)
    x = torch.randn(8, 2)

    def fit(state):
        return train.fit(
            lambda idx, p: head(model(x[idx])).pow(2).mean(),
            list(model.parameters()) + list(head.parameters()),
            8,
            epochs=1,
            batch_size=4,
            seed=0,
            device=torch.device("cpu"),
            models=[model],
            resume_state=state,
        )

    with resume.using(tmp_path):
        resume._current.update(folder=tmp_path, key="k", fits=0)
        try:
            with pytest.raises(ValueError, match="2 optimised tensor"):
                fit({})
            assert len(fit({"head": head})) == 1  # named: it checkpoints
        finally:
            resume._current.clear()
    assert (tmp_path / "k.ckpt" / "fit1.pt").is_file()


def test_a_pack_that_checkpoints_needs_batches_streams(tmp_path):
    from replikit import packed

    x, y = torch.randn(16, 3), torch.randint(0, 2, (16,))
    model = torch.nn.Linear(3, 2)
    idx = torch.arange(4)
    kwargs = dict(epochs=1, steps_per_epoch=2, width=2, lr=0.1, resume_state={})
    with resume.using(tmp_path):
        resume._current.update(folder=tmp_path, key="k", fits=0)
        try:
            with pytest.raises(ValueError, match="packed.Batches"):
                packed.fit([model], [lambda: idx], x, y, **kwargs)
            packed.fit([model], [packed.Batches(torch.arange(16), 4, 0).next], x, y, **kwargs)
        finally:
            resume._current.clear()
    assert (tmp_path / "k.ckpt" / "fit1.pt").is_file()


def test_a_loop_resumes_its_state_in_place_and_its_logs_on_the_device_asked(tmp_path, monkeypatch):
    monkeypatch.setenv(resume.EVERY_ENV, "0")
    w = torch.zeros(3)

    def task(run_to: int, device=None):
        loop = resume.Loop({"w": w}, total=4)
        start, logs = loop.resume(device)
        curve, note = logs.get("curve", []), logs.get("note")
        for t in range(start, run_to):
            w.add_(1.0)
            curve.append(w.sum().reshape(1))
            loop.save_if_due(t + 1, curve=curve, note="kept as it is")
        return start, curve, note

    resume._current.update(folder=tmp_path, key="k", fits=0)
    try:
        assert task(2) == (0, [torch.tensor([3.0]), torch.tensor([6.0])], None)
        w.zero_()  # a fresh process: the state comes back from the checkpoint
        resume._current["fits"] = 0
        start, curve, note = task(2, device="meta")
        assert start == 2 and note == "kept as it is" and w.tolist() == [2.0, 2.0, 2.0]
        assert [c.device.type for c in curve] == ["meta", "meta"]
        resume._current["fits"] = 0
        start, curve, _ = task(4)  # no device: the logs as the checkpoint holds them, on the CPU
        assert start == 2 and torch.cat(curve).tolist() == [3.0, 6.0, 9.0, 12.0]
    finally:
        resume._current.clear()


def test_two_processes_checkpointing_one_task_at_once_both_succeed(tmp_path):
    """Two runs of one method with one config (a notebook in the lab while `dvc repro` runs it) share the
    run store, so the same task's checkpoint is written by both: each writes its own temporary file
    before the atomic rename, and neither fails on the other's."""
    code = (
        "import sys, torch\n"
        "from pathlib import Path\n"
        "from replikit.resume import Checkpointer\n"
        "ckpt = Checkpointer(Path(sys.argv[1]))\n"
        "for i in range(300):\n"
        "    ckpt.save({'epoch': i, 'w': torch.zeros(2000)})\n"
    )
    path = tmp_path / "store" / "task.ckpt" / "fit0.pt"
    procs = [
        subprocess.Popen([sys.executable, "-c", code, str(path)], stderr=subprocess.PIPE) for _ in range(2)
    ]
    errors = [p.communicate(timeout=120)[1].decode() for p in procs]
    assert [p.returncode for p in procs] == [0, 0], errors
    assert int(__import__("torch").load(path)["epoch"]) == 299
    assert [f.name for f in path.parent.iterdir()] == [path.name]  # no temporary file left behind


USE_STORE = (
    "import sys\n"
    "from pathlib import Path\n"
    "from replikit import resume\n"
    "with resume.using(Path(sys.argv[1])):\n"
    "    print('in', flush=True)\n"
    "    sys.stdin.read()\n"
)


def user_of(store: Path) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src")}
    proc = subprocess.Popen(
        [sys.executable, "-c", USE_STORE, str(store)], env=env, stdin=subprocess.PIPE, stdout=subprocess.PIPE
    )
    assert proc.stdout.readline() == b"in\n"
    return proc


def test_the_last_run_out_clears_a_shared_store(tmp_path):
    """Two runs of one method and config at once share a store: the first to finish leaves it (and its
    records) to the other, which reads them back instead of training again; the last one out removes it.
    A killed run, or a pid reused by another process, does not hold a store forever."""
    store = tmp_path / "store"
    other = user_of(store)
    with resume.using(store):
        resume.record(store, "mine", 1)
        assert resume.users(store) == [other.pid]
    resume.clear(store)  # finished first: the other run is still inside
    assert resume.load_record(store, "mine") == 1
    other.communicate(b"", timeout=60)  # the other one finishes
    assert resume.users(store) == []
    resume.clear(store)
    assert not store.exists()

    killed = user_of(store)
    killed.kill()
    killed.wait(timeout=60)
    # a live pid, but not the process that wrote the file (pids are reused)
    (store / resume.USERS / f"{os.getppid()}-1000.00").touch()
    assert resume.users(store) == []
    resume.clear(store)
    assert not store.exists()


# ------------------------------------------------------------------ the store's key


def test_a_store_folder_changes_with_the_code_and_the_knobs_but_not_the_seed_count(tmp_path, monkeypatch):
    """The store's folder name hashes the resolved config (less what only says how many seeds run and where)
    and the package's source: edited code or parameters never read back stale records."""
    from replikit.methods import elr

    cfg = elr.Config(device="cpu", n_seeds=2, workers=1)
    folder = resume.store_folder(tmp_path, "elr", cfg)
    assert folder.parent == tmp_path / ".replikit" / "runs" and folder.name.startswith("elr-")
    more_seeds = cfg.model_copy(update={"n_seeds": 9, "n_max": 12, "seed_batch": 3, "workers": 4})
    assert resume.store_folder(tmp_path, "elr", more_seeds) == folder
    assert resume.store_folder(tmp_path, "elr", cfg.model_copy(update={"lr": 1e-3})) != folder
    monkeypatch.setattr(resume, "source_hash", lambda: "edited code")
    assert resume.store_folder(tmp_path, "elr", cfg) != folder


# ------------------------------------------------------------------ torch's global generator


class Killed(BaseException):
    """Stands for SIGKILL: a BaseException, so that nothing catches it."""


def kill_after_epoch(monkeypatch, epoch: int) -> None:
    """Checkpoint after every epoch (step), and raise Killed right after the checkpoint of ``epoch``."""
    real = resume.Checkpointer.save

    def save(self, state):
        real(self, state)
        if state["epoch"] == epoch:
            raise Killed

    monkeypatch.setenv(resume.EVERY_ENV, "0")
    monkeypatch.setattr(resume.Checkpointer, "save", save)


def in_store(folder, fn):
    """``fn()`` as the running task of a run store (None: no store, no checkpoints)."""
    if folder is None:
        return fn()
    resume._current.update(folder=folder, key="k", fits=0)
    try:
        return fn()
    finally:
        resume._current.clear()


def fit_with_dropout(folder=None):
    """A run whose steps draw from torch's global generator (dropout masks), built as a fresh process
    would build it: seeded, then initialised (which moves the global generator)."""
    from replikit import train

    g = torch.Generator().manual_seed(0)
    x = torch.randn(64, 5, generator=g)
    y = (x[:, 0] > 0).long()
    torch.manual_seed(0)
    model = torch.nn.Sequential(
        torch.nn.Linear(5, 16), torch.nn.ReLU(), torch.nn.Dropout(0.5), torch.nn.Linear(16, 2)
    )
    history = in_store(
        folder,
        lambda: train.fit(
            lambda idx, p: torch.nn.functional.cross_entropy(model(x[idx]), y[idx]),
            model.parameters(),
            len(x),
            epochs=4,
            batch_size=16,
            seed=1,
            device=torch.device("cpu"),
            lr=1e-2,
            models=[model],
            resume_state={},
        ),
    )
    return history, model.state_dict()


def test_fit_resumes_torchs_global_generator(tmp_path, monkeypatch):
    """A step that draws from torch's global generator (dropout) resumes to the uninterrupted numbers: the
    checkpoint holds the generator's state, which a new process would have elsewhere (its own init)."""
    whole, whole_weights = fit_with_dropout()
    kill_after_epoch(monkeypatch, 2)
    with pytest.raises(Killed):
        fit_with_dropout(tmp_path)
    resumed, weights = fit_with_dropout(tmp_path)
    assert resumed == whole
    assert all(torch.equal(weights[k], v) for k, v in whole_weights.items())


def pack_with_noise(folder=None):
    """A pack whose inputs get noise from torch's global generator (an augmentation without its own)."""
    from replikit import packed

    g = torch.Generator().manual_seed(0)
    x = torch.randn(32, 3, generator=g)
    y = (x[:, 0] > 0).long()
    torch.manual_seed(0)
    model = torch.nn.Linear(3, 2)
    return in_store(
        folder,
        lambda: packed.fit(
            [model],
            [packed.Batches(torch.arange(32), 8, seed=1).next],
            x,
            y,
            epochs=4,
            steps_per_epoch=2,
            width=2,
            lr=0.05,
            inputs=lambda idx: x[idx] + 0.5 * torch.randn(*idx.shape, 3),
            resume_state={},
        ),
    )


def test_a_pack_resumes_torchs_global_generator(tmp_path, monkeypatch):
    (whole,), (whole_history,) = pack_with_noise()
    kill_after_epoch(monkeypatch, 2)
    with pytest.raises(Killed):
        pack_with_noise(tmp_path)
    (resumed,), (history,) = pack_with_noise(tmp_path)
    assert history == whole_history
    assert all(torch.equal(resumed[k], v) for k, v in whole.items())


def noisy_loop(folder=None, steps=4) -> torch.Tensor:
    """A batched loop whose every step draws from torch's global generator."""
    torch.manual_seed(0)
    w = torch.zeros(3)

    def task():
        loop = resume.Loop({"w": w}, total=steps)
        start, _ = loop.resume()
        for t in range(start, steps):
            w.add_(torch.rand(3))
            loop.save_if_due(t + 1)
        return w

    return in_store(folder, task)


def test_a_loop_resumes_torchs_global_generator(tmp_path, monkeypatch):
    whole = noisy_loop().clone()
    kill_after_epoch(monkeypatch, 2)  # a Loop's checkpoints count its steps as "epoch"
    with pytest.raises(Killed):
        noisy_loop(tmp_path)
    assert torch.equal(noisy_loop(tmp_path), whole)
