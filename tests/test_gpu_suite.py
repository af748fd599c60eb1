"""benchmarks/gpu_suite.py: the default suite on a device, compared with the committed CPU results."""

import json

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
