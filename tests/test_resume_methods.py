"""Every method resumes a killed run to the numbers of an uninterrupted one: its whole hidden state
(augmentation and target-draw generators, batch streams, a weighting's own optimiser, early stopping's
memory, a pack's per-member state, a batched loop's tensors and curves) is in its checkpoints, taken in
``train.fit``, ``packed.fit`` or ``resume.Loop``.

In-process, at smoke size and on the full profile's path (stand-in data of the real shapes, a narrow
ResNet, tests/test_gpu_paths.py's tiny sizes), one seed, a checkpoint after every epoch. The run is
"killed" by an exception raised right after a mid-fit checkpoint, run again in the same run store, killed
again further on, and so on, at up to eight points spread over the method's whole sequence of mid-fit
checkpoints (every task, arm and fit call gets its turn): earlier fits come back finished, one comes
back half-way. The resumed run must end with the uninterrupted run's numbers, and no fit may ever save
an epoch twice (it resumed, it did not restart). tests/test_resume.py does the same for ELR with a real
SIGKILL in a subprocess.
"""

from __future__ import annotations

import contextlib

import numpy as np
import pandas as pd
import pytest
from test_gpu_paths import TINY_FULL, _narrow_resnet

from replikit import models, resume
from replikit.data import fake
from replikit.methods import available, get_method, load_config

RESUMING = available()
PACKING = [m for m in RESUMING if "pack" in get_method(m).Config.model_fields]
COMMON = {"device": "cpu", "workers": 1, "n_seeds": 1}
# at least one fit call with three epochs or more, so there is a middle to stop in
EPOCHS = {
    "dann": {"epochs": 3},
    "elr": {"epochs": 3},
    "sla": {"epochs": 3, "few_epochs": 3},
    "rotnet": {"pretext_epochs": 3, "ft_steps": 6},
    "gradnorm": {"epochs": 3},
    "uncertainty_weighting": {"epochs": 3},
    "task_arithmetic": {"pretrain_epochs": 3, "finetune_epochs": 3},
    "ties_merging": {"pretrain_epochs": 3, "finetune_epochs": 3},
    "model_soups": {"pretrain_epochs": 3, "ft_epochs": 3},
    "data_diet": {"epochs": 3, "score_epoch": 2},
    "downstream_scaling": {"ft_epochs": 3},
}
# every random draw a run makes beyond its batch order switched on (augmentations), so that the test sees
# its state: at smoke size where the profile allows it, the full profile (on stand-in data) for the rest
DRAWS = {
    "smoke": {
        "rotnet": {"pretext_augment": True},
        "model_soups": {"ft_augment": [False, True]},
    },
    "full": {"data_diet": {"crop_flip": True}, "sla": {"crop_flip": True}},
}


def overrides(method: str, profile: str) -> dict:
    tiny = TINY_FULL[method] if profile == "full" else {}
    return {**tiny, **COMMON, **EPOCHS.get(method, {}), **DRAWS[profile].get(method, {})}


class Killed(BaseException):
    """Stands for SIGKILL: a BaseException, so that no method's error handling catches it."""


def run(method: str, profile: str, extra: dict, store):
    cfg = load_config(method, profile=profile, overrides={**overrides(method, profile), **extra})
    with resume.using(store), fake.substitute(512, 64) if profile == "full" else contextlib.nullcontext():
        return get_method(method).run(cfg)


def spy_saves(monkeypatch, kill_at: set[int] = frozenset()) -> list[tuple[str, int, int]]:
    """Record every checkpoint as (fit file, epoch, epochs); raise Killed right after the mid-fit ones
    whose 0-based number, counted over every call of ``run`` from now on, is in ``kill_at``."""
    real, seen = resume.Checkpointer.save, []

    def save(self, state):
        real(self, state)
        seen.append((f"{self.path.parent.name}/{self.path.name}", state["epoch"], state["epochs"]))
        if state["epoch"] < state["epochs"] and sum(e < n for _, e, n in seen) - 1 in kill_at:
            raise Killed

    monkeypatch.setattr(resume.Checkpointer, "save", save)
    return seen


def assert_same_outcome(a, b) -> None:
    pd.testing.assert_frame_equal(a.runs, b.runs, check_exact=True)
    pd.testing.assert_frame_equal(a.history, b.history, check_exact=True)
    assert a.extras.keys() == b.extras.keys()
    for k, v in a.extras.items():
        if isinstance(v, pd.DataFrame):
            pd.testing.assert_frame_equal(v, b.extras[k], check_exact=True)


@pytest.mark.parametrize(
    "method, profile, extra",
    [pytest.param(m, p, {}, id=f"{m}-{p}") for p in ("smoke", "full") for m in RESUMING]
    + [pytest.param(m, "smoke", {"pack": 4}, id=f"{m}-packed") for m in PACKING]
    + [pytest.param("sla", "full", {"pack": 4}, id="sla-full-packed")],  # its augmentation draws, packed
)
def test_a_killed_run_resumes_to_the_uninterrupted_numbers(method, profile, extra, tmp_path, monkeypatch):
    monkeypatch.setattr(models, "_resnet_features", _narrow_resnet)  # the full profile's, narrow
    monkeypatch.setenv(resume.EVERY_ENV, "0")  # a checkpoint after every epoch
    saves = spy_saves(monkeypatch)
    whole = run(method, profile, extra, tmp_path / "whole")
    n_mid = sum(e < n for _, e, n in saves)
    assert n_mid, f"{method}: no fit call checkpointed in mid-run (nothing to resume)"
    kills = {round(i) for i in np.linspace(0, n_mid - 1, min(8, n_mid))}

    saves = spy_saves(monkeypatch, kills)
    for _ in kills:
        with pytest.raises(Killed):
            run(method, profile, extra, tmp_path / "killed")
    resumed = run(method, profile, extra, tmp_path / "killed")

    assert sum(e < n for _, e, n in saves) == n_mid  # every kill happened, and nothing was redone
    epochs: dict[str, list[int]] = {}
    for f, e, _ in saves:
        epochs.setdefault(f, []).append(e)
    assert all(a < b for e in epochs.values() for a, b in zip(e, e[1:])), "a fit restarted"
    assert_same_outcome(whole, resumed)
