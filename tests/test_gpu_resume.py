"""benchmarks/gpu_resume.py: a killed packed run resumes on a device (run here on the CPU), and the check
fails when a run restarts instead; the GPU session that runs it stays within one 8-minute call."""

import re

import pandas as pd
import pytest
from conftest import ROOT, benchmark

from replikit import resume


@pytest.fixture(scope="module")
def gpu_resume():
    return benchmark("gpu_resume")


def test_a_packed_run_resumes_to_its_uninterrupted_numbers(gpu_resume, tmp_path, monkeypatch):
    monkeypatch.setenv(resume.EVERY_ENV, "0")
    row = gpu_resume.check("elr", "cpu", 4, tmp_path)
    assert row["ok"] and row["pack"] == 4 and row["checkpoints"] >= 2
    assert row["rerun_diff"] == 0.0 and row["resumed_diff"] == 0.0
    assert not row["epoch_saved_twice"]
    assert "| elr | 4 |" in gpu_resume.table([row])


def test_a_run_that_restarts_instead_of_resuming_fails_the_check(gpu_resume, tmp_path, monkeypatch):
    monkeypatch.setenv(resume.EVERY_ENV, "0")
    monkeypatch.setattr(resume.Checkpointer, "load", lambda self: None)  # every checkpoint ignored
    row = gpu_resume.check("elr", "cpu", 4, tmp_path)
    assert row["epoch_saved_twice"] and not row["ok"]
    assert "NO" in gpu_resume.table([row])


def test_max_diff_compares_cells_and_shapes(gpu_resume):
    a = pd.DataFrame({"arm": ["x", "y"], "acc": [0.5, float("nan")]})
    assert gpu_resume.max_diff(a, a.copy()) == 0.0
    assert gpu_resume.max_diff(a, a.assign(acc=[0.25, float("nan")])) == 0.25
    assert gpu_resume.max_diff(a, a.assign(acc=[0.5, 1.0])) == float("inf")  # a NaN where there was none
    assert gpu_resume.max_diff(a, a.assign(arm=["x", "z"])) == float("inf")
    assert gpu_resume.max_diff(a, a.iloc[:1]) == float("inf")


def test_the_gpu_session_fits_one_eight_minute_device_call():
    script = (ROOT / "benchmarks" / "gpu_session.sh").read_text()
    limits = [int(t) for t in re.findall(r"^timeout (\d+) ", script, flags=re.M)]
    assert len(limits) == 4 and sum(limits) <= 480
    assert "benchmarks/gpu_resume.py" in script and "gpu_suite.py --lanes" in script
