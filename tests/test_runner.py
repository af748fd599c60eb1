"""The runner: validates before the notebook runs, rejects undeclared parameters, fails without damage."""

import json
import os
import shutil

import numpy as np
import pytest
from conftest import ROOT

from replikit import runner
from replikit.config import ConfigError


def test_undeclared_parameter_is_rejected_before_running(tmp_path):
    with pytest.raises(runner.RunnerError, match=r"does not declare parameter\(s\) \['epochs'\]"):
        runner.execute("elr", profile="smoke", out_dir=tmp_path, extra_parameters={"epochs": 3})
    assert not any(tmp_path.iterdir())


def test_bad_override_fails_at_once_naming_the_key(tmp_path):
    with pytest.raises(ConfigError, match=r"elr\.noise_rat: unknown key"):
        runner.execute("elr", profile="smoke", overrides={"noise_rat": 0.5}, out_dir=tmp_path)


def test_cli_exit_codes_and_messages(capsys):
    assert runner.main(["elr", "--profile", "smoke", "--set", "noise_rate=7"]) == 2
    assert "elr.noise_rate = 7" in capsys.readouterr().err
    assert runner.main(["nope"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("replikit.runner: unknown method 'nope'") and "known: critical_periods, dann" in err
    with pytest.raises(runner.RunnerError, match="expected KEY=VALUE"):
        runner.parse_overrides(["noise_rate"])
    assert runner.parse_overrides(["noise_rate=0.6", "model=mlp", "sweep_rates=[0.1, 0.2]"]) == {
        "noise_rate": 0.6,
        "model": "mlp",
        "sweep_rates": [0.1, 0.2],
    }


@pytest.mark.slow
def test_failing_notebook_keeps_the_executed_copy_and_the_old_results(tmp_path):
    """A notebook that raises: non-zero exit, traceback kept in logs/, previous results untouched."""
    shutil.copy(ROOT / "params.yaml", tmp_path / "params.yaml")
    (tmp_path / "notebooks").mkdir()
    source = (ROOT / "notebooks" / "elr.py").read_text()
    broken = source.replace(
        "outcome, verdicts = sequential.replicate(elr, cfg)", "raise RuntimeError('boom: injected failure')"
    )
    assert broken != source
    (tmp_path / "notebooks" / "elr.py").write_text(broken)
    previous = tmp_path / "results" / "elr"
    previous.mkdir(parents=True)
    (previous / "verdict.json").write_text(json.dumps({"method": "elr", "old": True}))

    with pytest.raises(runner.RunnerError, match="notebook failed") as err:
        runner.execute("elr", profile="smoke", root=tmp_path, out_dir=previous)
    failed = tmp_path / "logs" / "elr.failed.ipynb"
    assert str(failed) in str(err.value) and "boom: injected failure" in failed.read_text()
    assert json.loads((previous / "verdict.json").read_text()) == {"method": "elr", "old": True}
    assert sorted(p.name for p in previous.iterdir()) == ["verdict.json"]


def test_missing_real_data_fails_before_the_notebook_runs(tmp_path):
    shutil.copy(ROOT / "params.yaml", tmp_path / "params.yaml")
    (tmp_path / "notebooks").mkdir()
    shutil.copy(ROOT / "notebooks" / "elr.py", tmp_path / "notebooks" / "elr.py")
    with pytest.raises(runner.RunnerError) as err:
        runner.execute("elr", profile="full", root=tmp_path)
    assert "full profile needs real data not found under" in str(err.value)
    fetch = "cifar10. Fetch once with `python -m replikit.data.fetch cifar10`, then `dvc commit -f data.dvc`."
    assert fetch in str(err.value)
    assert not (tmp_path / "logs").exists()  # no notebook started


def test_real_data_named_by_each_profile(tmp_path):
    from replikit.data import real
    from replikit.methods import load_config

    for method in ("dann", "elr", "task_arithmetic", "rotnet"):
        assert real.named_in(load_config(method, profile="smoke")) == []
        assert real.named_in(load_config(method, profile="default")) == []
    assert real.named_in(load_config("dann", profile="full")) == ["mnist", "svhn"]
    assert real.named_in(load_config("task_arithmetic", profile="full")) == ["cifar10", "mnist", "svhn"]
    assert real.named_in(load_config("elr", profile="smoke", overrides={"dataset": "cifar10"})) == ["cifar10"]
    assert real.missing(["mnist", "cifar10"], tmp_path) == ["mnist", "cifar10"]
    for f in real.FILES["mnist"]:
        (tmp_path / f).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / f).write_bytes(b"")
    assert real.missing(["mnist", "cifar10"], tmp_path) == ["cifar10"]


@pytest.mark.slow
def test_damaged_data_shows_the_root_cause_and_kernels_start_quietly(tmp_path, capfd):
    """papermill only says PapermillExecutionError; the runner says what went wrong in the kernel."""
    shutil.copy(ROOT / "params.yaml", tmp_path / "params.yaml")
    (tmp_path / "notebooks").mkdir()
    shutil.copy(ROOT / "notebooks" / "elr.py", tmp_path / "notebooks" / "elr.py")
    damaged = tmp_path / "data" / "default" / "mnist1d"
    damaged.mkdir(parents=True)
    for name in ("y_train", "x_test", "y_test"):
        np.save(damaged / f"{name}.npy", np.zeros(4, dtype=np.int64))
    (damaged / "x_train.npy").write_bytes(b"\x93NUMPY truncated")  # e.g. a copy cut short
    with pytest.raises(runner.RunnerError) as err:
        runner.execute("elr", profile="smoke", root=tmp_path)
    message = str(err.value)
    assert "elr: notebook failed: ValueError: " in message and "mnist1d is damaged" in message
    assert "`dvc repro prepare`" in message and "logs/elr.failed.ipynb" in message
    printed = capfd.readouterr()
    assert "without encryption" not in printed.err + printed.out
    assert "KeyboardInterrupt" not in printed.err + printed.out


@pytest.fixture
def kernels(monkeypatch):
    """Every EarlyKernel the runner starts, kept for inspection."""
    started = []

    class Recorded(runner.EarlyKernel):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            started.append(self)

    monkeypatch.setattr(runner, "EarlyKernel", Recorded)
    return started


def _alive(kernel) -> bool:
    from jupyter_core.utils import run_sync

    return run_sync(kernel.km.is_alive)()


def test_a_failed_check_stops_the_early_kernel(kernels, tmp_path):
    with pytest.raises(ConfigError):
        runner.execute("elr", profile="smoke", overrides={"noise_rat": 0.5}, out_dir=tmp_path)
    [kernel] = kernels
    assert not kernel.used and not _alive(kernel)


@pytest.mark.slow
def test_the_early_kernel_leaves_no_trace_in_the_notebook(kernels, tmp_path):
    """The warm-up imports run silently: the notebook's cells count from 1 and carry only their own output."""
    import nbformat

    out = runner.execute("critical_periods", profile="smoke", out_dir=tmp_path / "cp")
    [kernel] = kernels
    assert kernel.used and not _alive(kernel)
    nb = nbformat.read(out / "critical_periods.ipynb", as_version=4)
    code = [c for c in nb.cells if c.cell_type == "code"]
    assert [c.execution_count for c in code] == list(range(1, len(code) + 1))
    imports = next(c for c in code if c.source.startswith("from replikit import"))
    assert not any(o.get("output_type") == "error" for o in imports.outputs)


def test_a_killed_runs_executed_copy_is_swept_and_a_live_one_kept(tmp_path):
    import subprocess
    import sys

    from replikit import processes

    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()  # its pid is free now (reused only after the kernel's pid range wraps)
    stale = tmp_path / f"elr.running-{dead.pid}-1000.00.ipynb"
    reused = tmp_path / f"elr.running-{os.getppid()}-1000.00.ipynb"  # a live pid, but a later process
    older = tmp_path / f"elr.running-{dead.pid}.ipynb"  # an older version's name: the pid alone
    live = tmp_path / f"elr.running-{processes.tag()}.ipynb"
    other = tmp_path / f"dann.running-{dead.pid}-1000.00.ipynb"
    for f in (stale, reused, older, live, other):
        f.write_text("{}")
    assert sorted(runner.sweep_running(tmp_path, "elr")) == sorted([stale, reused, older])
    assert not stale.exists() and live.exists() and other.exists()


@pytest.mark.slow
def test_two_runs_of_one_method_at_once_keep_their_own_notebooks(tmp_path):
    """Two runners of one method in one checkout (the two lanes of `gpu_suite --lanes` crossing on a
    method) each write their executed notebook to a file of their own and keep it in their results."""
    import subprocess
    import sys
    import time

    method, logs = "critical_periods", ROOT / "logs"
    procs = {
        name: subprocess.Popen(
            [
                sys.executable,
                "-m",
                "replikit.runner",
                method,
                "--profile",
                "smoke",
                "--out",
                str(tmp_path / name),
            ],
            cwd=ROOT,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        for name in ("a", "b")
    }
    seen: set[str] = set()
    while any(p.poll() is None for p in procs.values()):
        seen |= {f.name for f in logs.glob(f"{method}.running-*.ipynb")}
        time.sleep(0.05)
    for name, p in procs.items():
        assert p.returncode == 0, p.stdout.read()
        # each run had its own executed copy
        assert any(f.startswith(f"{method}.running-{p.pid}-") for f in seen)
        executed = (tmp_path / name / f"{method}.ipynb").read_text()
        assert f".{name}.next-{p.pid}-" in executed  # and kept its own, not the other's
        assert not any(logs.glob(f"{method}.running-{p.pid}-*.ipynb"))


def test_an_unknown_method_fails_before_a_kernel_starts(kernels):
    with pytest.raises(runner.RunnerError, match="unknown method 'elrr'"):
        runner.execute("elrr")
    assert kernels == []


def test_out_refuses_a_folder_whose_replacing_would_lose_something(tmp_path):
    """The swap replaces the results folder whole, so --out must never name one holding anything else."""
    root = tmp_path / "project"
    (root / "results").mkdir(parents=True)
    for out in (root, tmp_path, root / ".." / "project"):  # the project, a folder above it, the same by ..
        with pytest.raises(runner.RunnerError, match="the project folder or one above it"):
            runner.check_out(out, root, "elr")
    mine = root / "mine"
    mine.mkdir()
    (mine / "notes.txt").write_text("precious")
    with pytest.raises(runner.RunnerError, match=r"holds other files \(notes.txt, \.\.\.\)"):
        runner.check_out(mine, root, "elr")
    (root / "results" / "dann").mkdir()
    (root / "results" / "dann" / "verdict.json").write_text(json.dumps({"method": "dann"}))
    for out, message in (
        (root / "results", "holds other files"),
        (root / "results" / "dann", "results of dann"),
    ):
        with pytest.raises(runner.RunnerError, match=message):
            runner.check_out(out, root, "elr")
    (root / "file").write_text("x")
    with pytest.raises(runner.RunnerError, match="a file, not a folder"):
        runner.check_out(root / "file", root, "elr")
    runner.check_out(root / "results" / "dann", root, "dann")  # an earlier run of the same method
    runner.check_out(root / "new" / "folder", root, "elr")
    (root / "empty").mkdir()
    runner.check_out(root / "empty", root, "elr")


def test_out_through_the_cli_keeps_the_folder_and_counts_from_the_current_folder(
    tmp_path, monkeypatch, capsys
):
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "notes.txt").write_text("precious")
    assert runner.main(["critical_periods", "--profile", "smoke", "--out", str(mine)]) == 2
    assert "holds other files (notes.txt" in capsys.readouterr().err
    assert [p.name for p in mine.iterdir()] == ["notes.txt"] and (
        mine / "notes.txt"
    ).read_text() == "precious"
    seen = {}
    monkeypatch.setattr(
        runner, "execute", lambda method, profile, overrides, out: seen.setdefault("out", out)
    )
    monkeypatch.chdir(ROOT / "notebooks")
    assert runner.main(["elr", "--out", "mine"]) == 0
    assert seen["out"] == ROOT / "notebooks" / "mine"


def test_runs_off_params_yaml_go_to_scratch_unless_told(capsys):
    """Only the run `dvc repro` makes from params.yaml lands in results/ (which the report and README read)."""
    from replikit.methods import load_config

    def out(profile=None, overrides=None):
        cfg = load_config("elr", profile=profile, overrides=overrides)
        return runner.default_out("elr", cfg, ROOT, profile, overrides)

    assert out() == ROOT / "results" / "elr"
    assert out(profile=load_config("elr").profile) == ROOT / "results" / "elr"  # params.yaml's own profile
    assert out(overrides={"noise_rate": load_config("elr").noise_rate}) == ROOT / "results" / "elr"
    capsys.readouterr()
    for profile, overrides in (("smoke", None), (None, {"seed": "pilot"}), (None, {"noise_rate": 0.123})):
        assert out(profile, overrides) == ROOT / "scratch" / "elr"
        assert "not params.yaml's, so the results go to scratch/elr/" in capsys.readouterr().err


def test_ctrl_c_says_the_results_are_unchanged_and_how_to_resume(monkeypatch, capsys):
    import logging

    def interrupted(*args):
        raise KeyboardInterrupt

    monkeypatch.setattr(runner, "execute", interrupted)
    monkeypatch.setattr(logging.getLogger("asyncio"), "level", logging.NOTSET)
    assert runner.main(["elr"]) == 130
    err = capsys.readouterr().err
    assert "elr: interrupted; its results are unchanged. Run the same command again to resume" in err
    # the notebook client's cancelled cell, reported at exit with the kernel's traceback, is silenced
    assert logging.getLogger("asyncio").level == logging.CRITICAL


@pytest.mark.slow
def test_a_successful_run_removes_an_earlier_failures_log(tmp_path):
    shutil.copy(ROOT / "params.yaml", tmp_path / "params.yaml")
    (tmp_path / "notebooks").mkdir()
    shutil.copy(ROOT / "notebooks" / "critical_periods.py", tmp_path / "notebooks" / "critical_periods.py")
    (tmp_path / "logs").mkdir()
    failed, other = (
        tmp_path / "logs" / "critical_periods.failed.ipynb",
        tmp_path / "logs" / "elr.failed.ipynb",
    )
    failed.write_text("{}")
    other.write_text("{}")
    out = runner.execute("critical_periods", profile="smoke", root=tmp_path, out_dir=tmp_path / "cp")
    assert (out / "verdict.json").is_file()
    assert not failed.exists() and other.exists()
