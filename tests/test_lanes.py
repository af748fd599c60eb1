"""replikit.lanes: dvc repro's method stages in a GPU lane and a cores lane side by side."""

import json
import os
import subprocess
import sys
import textwrap
import time

import pytest
import yaml
from conftest import ROOT, commit, sh, tool_env

from replikit import lanes


def test_plan_sends_the_pinned_methods_to_the_cores():
    params = {
        "profile": "default",
        "methods": ["a", "b", "c", "d", "e"],
        "b": {"device": "cpu"},
        "c": {"profiles": {"default": {"device": "cpu"}}},
        "d": {"profiles": {"smoke": {"device": "cpu"}}},
        "e": {"device": "cuda", "profiles": {"full": {"device": "cpu"}}},
    }
    assert lanes.plan(params, cuda=True) == {"gpu": ["a", "d", "e"], "cores": ["b", "c"]}
    assert lanes.plan(params, cuda=True, profile="smoke") == {"gpu": ["a", "c", "e"], "cores": ["b", "d"]}
    assert lanes.plan(params, cuda=True, profile="full")["cores"] == ["b", "e"]  # the profile's value first
    assert lanes.plan(params, cuda=False) == {"gpu": [], "cores": ["a", "b", "c", "d", "e"]}
    real = yaml.safe_load((ROOT / "params.yaml").read_text())
    assert lanes.plan(real, cuda=True)["cores"] == ["grokking", "critical_periods"]  # params.yaml order
    assert lanes.split_cores([0, 1, 2], 1) == ([0], [1, 2])
    with pytest.raises(SystemExit, match="leaves no core"):
        lanes.split_cores([0, 1], 2)


STAGE = """
import json, os, sys, time
from pathlib import Path
item = sys.argv[1]
if Path(f"fail_{item}").exists():
    sys.exit(3)
start = time.time()
time.sleep(2.5)
Path("out").mkdir(exist_ok=True)
info = {"cpus": sorted(os.sched_getaffinity(0)), "start": start, "end": time.time()}
Path(f"out/{item}.json").write_text(json.dumps(info))
"""


@pytest.fixture
def toy_repo(tmp_path):
    """A pipeline of the suite's shape (prepare, method@X for each method, report) whose stages record
    the CPU cores they ran on and when."""
    (tmp_path / "stage.py").write_text(textwrap.dedent(STAGE))
    (tmp_path / "inputs").mkdir()
    for m in "abc":
        (tmp_path / "inputs" / f"{m}.txt").write_text("1")
    params = {"profile": "default", "methods": ["a", "b", "c"], "c": {"device": "cpu"}}
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    pipeline = {
        "stages": {
            "prepare": {"cmd": "echo data > data.txt", "outs": ["data.txt"]},
            "method": {
                "foreach": "${methods}",
                "do": {
                    "cmd": "python stage.py ${item}",
                    "deps": ["stage.py", "data.txt", "inputs/${item}.txt"],
                    "outs": [{"out/${item}.json": {"persist": True}}],
                },
            },
            "report": {
                "cmd": "cat out/a.json out/b.json out/c.json > report.txt",
                "deps": ["out/a.json", "out/b.json", "out/c.json"],
                "outs": ["report.txt"],
            },
        }
    }
    (tmp_path / "dvc.yaml").write_text(yaml.safe_dump(pipeline, sort_keys=False))
    sh("git", "init", "-q", cwd=tmp_path)
    sh("dvc", "init", "-q", cwd=tmp_path)
    commit(tmp_path, "toy")
    return tmp_path


def run_lanes(repo, *extra):
    cmd = [sys.executable, "-m", "replikit.lanes", "--assume-cuda", "--gpu-cores", "1", *extra]
    return subprocess.run(cmd, cwd=repo, env=tool_env(), capture_output=True, text=True)


@pytest.mark.slow
def test_lanes_run_side_by_side_on_their_cores_and_leave_dvc_up_to_date(toy_repo):
    available = sorted(os.sched_getaffinity(0))
    if len(available) < 2:
        pytest.skip("needs two CPU cores")
    done = run_lanes(toy_repo, "--dry")
    assert done.returncode == 0 and "cores lane on CPU cores" in done.stdout
    assert not (toy_repo / "out").exists()  # --dry ran nothing
    done = run_lanes(toy_repo)
    assert done.returncode == 0, done.stdout + done.stderr
    info = {m: json.loads((toy_repo / "out" / f"{m}.json").read_text()) for m in "abc"}
    assert info["a"]["cpus"] == info["b"]["cpus"] == available[:1]  # the GPU lane, one after another
    assert info["c"]["cpus"] == available[1:]
    assert info["a"]["end"] <= info["b"]["start"]
    assert info["c"]["start"] < info["a"]["end"]  # the lanes overlapped
    assert (toy_repo / "report.txt").is_file()
    assert "up to date" in sh("dvc", "status", cwd=toy_repo)
    again = run_lanes(toy_repo)
    assert again.returncode == 0 and again.stdout.count("skipped (unchanged)") == 3
    # a failing stage: its lane goes on, its last good output stays, the report waits
    (toy_repo / "inputs" / "a.txt").write_text("2")
    (toy_repo / "inputs" / "b.txt").write_text("2")
    (toy_repo / "fail_a").write_text("")
    before = (toy_repo / "out" / "a.json").read_text()
    failed = run_lanes(toy_repo)
    assert failed.returncode == 1 and "failed: a" in failed.stdout
    assert "[gpu] b: done" in failed.stdout  # the lane went on after a
    assert (toy_repo / "out" / "a.json").read_text() == before
    assert "report" in sh("dvc", "status", cwd=toy_repo)  # not rerun


def test_without_cuda_it_is_plain_dvc_repro(toy_repo):
    done = subprocess.run(
        [sys.executable, "-m", "replikit.lanes", "--dry"],
        cwd=toy_repo,
        env=tool_env(),
        capture_output=True,
        text=True,
    )
    if "GPU lane" in done.stdout:
        pytest.skip("this machine has CUDA")
    assert done.returncode == 0 and "plain dvc repro" in done.stdout


@pytest.mark.slow
def test_a_kill_stops_both_lanes_and_a_rerun_completes(toy_repo):
    if len(os.sched_getaffinity(0)) < 2:
        pytest.skip("needs two CPU cores")
    stage = toy_repo / "stage.py"
    stage.write_text(
        stage.read_text().replace("time.sleep(2.5)", "time.sleep(float(os.environ.get('NAP', 2.5)))")
    )
    commit(toy_repo, "a stage that can nap")
    cmd = [sys.executable, "-m", "replikit.lanes", "--assume-cuda", "--gpu-cores", "1"]
    env = dict(tool_env(), NAP="60")
    proc = subprocess.Popen(
        cmd, cwd=toy_repo, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    deadline = time.monotonic() + 60
    while len(stage_processes()) < 2:  # both lanes' first stages are running
        assert time.monotonic() < deadline and proc.poll() is None, proc.stdout.read() if proc.poll() else ""
        time.sleep(0.2)
    proc.terminate()
    log = proc.communicate(timeout=30)[0]
    assert proc.returncode == 130 and "stopped" in log, log
    time.sleep(0.5)
    assert not stage_processes()  # nothing of either lane lives on
    assert not (toy_repo / "out").exists()
    done = run_lanes(toy_repo)  # DVC's locks died with the killed stages: a rerun goes through
    assert done.returncode == 0, done.stdout + done.stderr
    assert all((toy_repo / "out" / f"{m}.json").is_file() for m in "abc")


def stage_processes() -> list:
    import psutil

    found = []  # the stages' python processes (not the shells DVC starts them with)
    for p in psutil.process_iter(["cmdline"]):
        argv = p.info["cmdline"] or []
        if (
            argv
            and os.path.basename(argv[0]).startswith("python")
            and any(a.endswith("stage.py") for a in argv)
        ):
            found.append(" ".join(argv))
    return found
