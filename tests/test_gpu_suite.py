"""benchmarks/gpu_suite.py: the default suite on a device, compared with the committed CPU results."""

import json
import time

import psutil
import pytest
import yaml
from conftest import ROOT, benchmark


@pytest.fixture(scope="module")
def gpu_suite():
    return benchmark("gpu_suite")


def claim(cid, verdict, lo, hi):
    return {"id": cid, "verdict": verdict, "ci_low": lo, "ci_high": hi}


def test_compare_counts_flips_and_disjoint_intervals(gpu_suite):
    cpu = {"claims": [claim("a", "reproduced", 0.1, 0.3), claim("b", "inconclusive", -0.1, 0.1)]}
    dev = {"claims": [claim("a", "reproduced", 0.25, 0.4), claim("b", "not_reproduced", 0.2, 0.3)]}
    got = gpu_suite.compare(cpu, dev)
    assert got == {
        "claims": 2,
        "same_verdict": 1,
        "overlapping_ci": 1,
        "flips": ["b: inconclusive -> not_reproduced"],
    }


def test_summary_judges_the_quarter_time_goal(gpu_suite):
    rows = [
        {"method": "x", "status": "ok", "wall_s": 30.0, "runs_s": 20.0, "cpu_runs_s": 100.0},
        {"method": "y", "status": "ok", "wall_s": 10.0, "runs_s": 10.0, "cpu_runs_s": 20.0},
        {"method": "z", "status": "skipped: time budget spent"},
    ]
    s = gpu_suite.summary(rows)
    assert s["ratio"] == 0.25 and s["goal_met"] and s["methods_timed"] == 2 and s["device_wall_s"] == 40.0
    rows[1]["runs_s"] = 11.0
    assert not gpu_suite.summary(rows)["goal_met"]


def test_cpu_smoke_run_writes_the_table_and_leaves_results_alone(gpu_suite, tmp_path):
    before = (ROOT / "results" / "critical_periods" / "verdict.json").read_bytes()
    ref = tmp_path / "ref" / "critical_periods"
    ref.mkdir(parents=True)
    out = tmp_path / "suite"
    args = ["--device", "cpu", "--profile", "smoke", "--methods", "critical_periods,nonexistent"]
    assert gpu_suite.main([*args, "--reference", str(tmp_path / "ref"), "--out", str(out)]) == 0
    report = json.loads(out.with_suffix(".json").read_text())
    ok, bad = report["rows"]
    assert ok["status"] == "ok" and ok["runs_s"] > 0 and "cpu_runs_s" not in ok  # no reference there
    assert bad["status"].startswith("error:")
    assert gpu_suite.main([*args, "--budget", "0", "--out", str(out)]) == 0  # nothing starts: all skipped
    skipped = json.loads(out.with_suffix(".json").read_text())["rows"]
    assert [r["status"] for r in skipped] == ["skipped: time budget spent"] * 2
    assert (ROOT / "results" / "critical_periods" / "verdict.json").read_bytes() == before
    assert "critical_periods" in out.with_suffix(".md").read_text()


def test_row_compares_only_the_same_profile(gpu_suite, tmp_path):
    dev, ref = tmp_path / "dev", tmp_path / "ref" / "m"
    dev.mkdir()
    ref.mkdir(parents=True)
    claims = [claim("a", "reproduced", 0.1, 0.3)]
    (dev / "verdict.json").write_text(json.dumps({"profile": "default", "runtime_s": 5.0, "claims": claims}))
    (ref / "verdict.json").write_text(json.dumps({"profile": "default", "runtime_s": 40.0, "claims": claims}))
    row = gpu_suite.row_for("m", 6.0, dev, tmp_path / "ref")
    assert row["same_verdict"] == row["claims"] == 1 and row["cpu_runs_s"] == 40.0
    (ref / "verdict.json").write_text(json.dumps({"profile": "smoke", "runtime_s": 4.0, "claims": claims}))
    row = gpu_suite.row_for("m", 6.0, dev, tmp_path / "ref")
    assert "claims" not in row and "cpu_runs_s" not in row and "smoke" in row["note"]


def test_set_values_reach_every_method_or_one(gpu_suite):
    sets = {"workers": 4, "elr.pack": 16, "data_diet.pack": 16}
    assert gpu_suite.overrides_for("elr", sets, "cuda") == {"device": "cuda", "workers": 4, "pack": 16}
    assert gpu_suite.overrides_for("dann", sets, "cuda") == {"device": "cuda", "workers": 4}


def test_a_method_whose_profile_pins_its_device_keeps_it_unless_set(gpu_suite):
    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    assert gpu_suite.pinned(params, "critical_periods", "default") and gpu_suite.pinned(
        params, "grokking", "smoke"
    )
    assert not gpu_suite.pinned(params, "critical_periods", "full")  # the paper's scale goes to the GPU
    assert not gpu_suite.pinned(params, "elr", "default")
    assert gpu_suite.overrides_for("grokking", {"workers": 4}, "cuda", pin=True) == {"workers": 4}
    forced = gpu_suite.overrides_for("grokking", {"grokking.device": "cuda"}, "cuda", pin=True)
    assert forced == {"device": "cuda"}


def test_the_table_marks_a_method_kept_on_the_cpu(gpu_suite):
    rows = [
        {
            "method": "grokking",
            "status": "ok",
            "device": "cpu",
            "wall_s": 9.0,
            "runs_s": 5.0,
            "cpu_runs_s": 30.0,
        },
        {"method": "elr", "status": "ok", "device": "cuda", "wall_s": 9.0, "runs_s": 5.0, "cpu_runs_s": 55.0},
    ]
    text = gpu_suite.table(rows, "default suite on NVIDIA H200 (default profile)")
    assert "| grokking (on cpu) | ok |" in text and "| elr | ok |" in text
    assert "(on cpu)" not in gpu_suite.table(rows, "default suite on cpu (default profile)")


def test_placement_puts_each_method_where_it_ran_faster(gpu_suite, tmp_path, capsys):
    def row(method, device, runs_s, cpu_runs_s, same=1):
        return {
            "method": method,
            "status": "ok",
            "device": device,
            "runs_s": runs_s,
            "cpu_runs_s": cpu_runs_s,
            "claims": 2,
            "same_verdict": same,
            "overlapping_ci": 2,
        }

    gpu = [
        row("elr", "cuda", 10.0, 50.0),  # faster on the GPU
        row("gradnorm", "cuda", 30.0, 50.0),  # faster on the cores
        row("grokking", "cpu", 8.0, 30.0),  # pinned to the cores in the GPU run
        {"method": "sla", "status": "skipped: time budget spent"},
    ]
    cores = [
        row("gradnorm", "cpu", 12.0, 50.0, same=2),
        row("elr", "cpu", 20.0, 50.0),
        row("rotnet", "cpu", 5.0, 28.0),
    ]
    p = gpu_suite.placement(gpu, cores)
    by = {r["method"]: r for r in p["rows"]}
    assert [r["method"] for r in p["rows"]] == ["elr", "gradnorm", "grokking", "rotnet"]  # sla: timed nowhere
    assert (by["elr"]["best"], by["elr"]["runs_s"]) == ("gpu", 10.0)
    assert (by["gradnorm"]["best"], by["gradnorm"]["runs_s"], by["gradnorm"]["same_verdict"]) == (
        "cores",
        12.0,
        2,
    )
    assert by["gradnorm"]["gpu_s"] == 30.0 and by["gradnorm"]["cores_s"] == 12.0
    assert by["grokking"]["gpu_s"] is None and by["grokking"]["best"] == "cores"
    assert p["machine_runs_s"] == 10 + 12 + 8 + 5 and p["cpu_runs_s"] == 50 + 50 + 30 + 28
    assert p["ratio"] == round(35 / 158, 3) and p["goal_met"]
    assert p["to_pin"] == ["gradnorm"]  # grokking is pinned already, rotnet never ran on the GPU
    text = gpu_suite.placement_table(p)
    assert "| gradnorm | 30.0 | 12.0 | cores | 50.0 | 2/2 |" in text and "goal <= 0.25: met" in text
    # from the two runs' files, running nothing; a missing file counts as a run with no rows
    (tmp_path / "gpu.json").write_text(json.dumps({"rows": gpu}))
    assert gpu_suite.main(["--placement", str(tmp_path / "gpu.json"), str(tmp_path / "none.json")]) == 0
    assert "each method in its faster place, 3 methods: 48.0 s in runs" in capsys.readouterr().out


def test_lanes_run_the_two_ends_of_one_order(gpu_suite):
    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    methods = ["grokking", "gradnorm", "newcomer", "data_diet", "elr", "critical_periods"]
    gpu, cores = gpu_suite.lane_methods(methods, params, "default")
    assert gpu == ["data_diet", "elr", "gradnorm", "newcomer"]  # the pinned two never reach the GPU
    assert cores == ["grokking", "critical_periods", "gradnorm", "elr", "data_diet", "newcomer"]
    assert set(gpu_suite.GPU_FIRST) <= set(params["methods"])
    assert gpu_suite.split_cores(list(range(16)), 2) == ([0, 1], list(range(2, 16)))
    with pytest.raises(SystemExit, match="leaves no core"):
        gpu_suite.split_cores([0, 1], 2)


def lane_row(method, gpu_s, cores_s, cpu_runs_s):
    return {"method": method, "gpu_s": gpu_s, "cores_s": cores_s, "cpu_runs_s": cpu_runs_s}


def test_two_lanes_put_each_method_where_the_later_lane_ends_first(gpu_suite):
    rows = [
        lane_row("a", 10.0, 40.0, 100.0),
        lane_row("b", 10.0, 12.0, 60.0),
        lane_row("c", 30.0, 14.0, 50.0),
        lane_row("pinned", None, 8.0, 30.0),
        lane_row("gpu_only", 6.0, None, None),  # no 2-core reference: placed, not in the ratio
    ]
    t = gpu_suite.two_lanes(rows)
    # every split tried: a and b on the GPU (26 s), c and pinned on the cores (22 s); b on the cores
    # instead (GPU 16 s, cores 34 s) or c on the GPU (GPU 56 s) ends later
    assert (t["gpu"], t["cores"]) == (["gpu_only", "a", "b"], ["pinned", "c"])
    assert (t["gpu_s"], t["cores_s"], t["makespan_s"]) == (26.0, 22.0, 26.0)
    assert t["cpu_runs_s"] == 240.0 and t["methods_timed"] == 4
    assert t["ratio"] == round(26 / 240, 3) and t["goal_met"] and t["to_pin"] == ["c"]
    assert t["plain_s"] == 10 + 10 + 30 + 8 and t["plain_ratio"] == round(58 / 240, 3)  # gpu_only: no ref
    t = gpu_suite.two_lanes([lane_row("a", 50.0, 60.0, 100.0)])  # one method: one lane, the faster
    assert (t["gpu"], t["cores"], t["ratio"], t["goal_met"]) == (["a"], [], 0.5, False)
    assert "pin" not in gpu_suite.two_lanes_text(t) and "not met" in gpu_suite.two_lanes_text(t)
    assert gpu_suite.two_lanes([])["ratio"] is None


def test_lanes_on_the_cpu_run_side_by_side_and_a_cut_off_keeps_what_finished(gpu_suite, tmp_path):
    out = tmp_path / "lanes"
    args = ["--lanes", "--device", "cpu", "--gpu-cores", "1", "--profile", "smoke"]
    args += ["--methods", "task_arithmetic,critical_periods", "--reference", str(tmp_path)]
    assert gpu_suite.main([*args, "--out", str(out)]) == 0
    report = json.loads(out.with_suffix(".json").read_text())
    assert [(r["method"], r["lane"], r["status"]) for r in report["gpu"]] == [
        ("task_arithmetic", "gpu", "ok")
    ]
    assert [(r["method"], r["lane"]) for r in report["cores"]] == [
        ("critical_periods", "cores"),
        ("task_arithmetic", "cores"),
    ]
    lanes = report["lanes"]
    assert lanes["gpu"]["cpus"] != lanes["cores"]["cpus"] and all(v["wall_s"] > 0 for v in lanes.values())
    by = {r["method"]: r for r in report["placement"]["rows"]}
    assert by["critical_periods"]["gpu_s"] is None and by["task_arithmetic"]["gpu_s"] > 0
    assert "critical_periods" in report["two_lanes"]["cores"]
    # cut off before a stage can finish: both lanes are killed with their kernels, and it still reports
    started = time.time()
    assert gpu_suite.main([*args, "--limit", "5", "--out", str(out)]) == 0
    report = json.loads(out.with_suffix(".json").read_text())
    assert all(v["wall_s"] is None for v in report["lanes"].values())
    assert report["gpu"] == report["cores"] == []  # not the first call's rows, left in the same files
    assert "cut off at 5.0 s" in out.with_suffix(".md").read_text()
    # a killed lane's kernels would live on as orphans (they run in sessions of their own)
    left = []
    for proc in psutil.process_iter(["cmdline", "create_time"]):
        line = " ".join(proc.info["cmdline"] or [])
        if proc.info["create_time"] >= started - 1 and ("ipykernel" in line or "gpu_suite" in line):
            left.append(line)
    assert not left, left


def test_lanes_without_cuda_stop_before_anything_runs(gpu_suite, tmp_path):
    if __import__("torch").cuda.is_available():
        pytest.skip("this machine has CUDA")
    with pytest.raises(SystemExit, match="CUDA is not available"):
        gpu_suite.main(["--lanes", "--device", "cuda", "--gpu-cores", "1", "--out", str(tmp_path / "x")])
    assert not list(tmp_path.iterdir())


def test_a_timing_clears_runs_an_earlier_call_left_in_the_run_store(gpu_suite, tmp_path, monkeypatch):
    """A run cut off earlier leaves its finished runs in the store (for a resume); a timing must not read
    them back (its runs would take 0 s), so the method's store is cleared before the notebook runs."""
    from replikit import resume, runner
    from replikit.methods import load_config

    cfg = load_config("critical_periods", profile="smoke", overrides={}, params_file=ROOT / "params.yaml")
    store = resume.store_folder(ROOT, "critical_periods", cfg)
    store.mkdir(parents=True, exist_ok=True)
    (store / "left.pt").write_bytes(b"an earlier call's run")
    seen = {}

    def fake_execute(method, **kw):
        seen["store_then"] = store.exists() and any(store.iterdir())
        raise RuntimeError("stop here")

    monkeypatch.setattr(runner, "execute", fake_execute)
    row = gpu_suite.run_method("critical_periods", "smoke", {}, tmp_path, tmp_path)
    assert seen == {"store_then": False} and row["status"].startswith("error: RuntimeError")
