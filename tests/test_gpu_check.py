"""benchmarks/gpu_check.py in its CPU mode: rows for every method asked, failures recorded, never fatal."""

import json

import pytest
from conftest import benchmark


@pytest.fixture(scope="module")
def gpu_check():
    return benchmark("gpu_check")


def test_quick_cpu_full_part_projects_gpu_hours(gpu_check, tmp_path):
    out = tmp_path / "gc"
    rc = gpu_check.main(
        [
            "--device",
            "cpu",
            "--quick",
            "--methods",
            "dann,rotnet",
            "--parts",
            "full",
            "--out",
            str(out),
        ]
    )
    report = json.loads(out.with_suffix(".json").read_text())
    assert rc == 0, report["rows"]
    assert [r["method"] for r in report["rows"]] == ["dann", "rotnet"]  # no ResNets: slow on CPU
    for row in report["rows"]:
        assert row["status"] == "ok" and row["gpu_hours"] > 0 and row["fit_calls"] > 0
    assert "| full | dann | ok |" in out.with_suffix(".md").read_text()
    assert report["environment"]["device"] == "cpu"


def test_a_failing_row_does_not_stop_the_check(gpu_check, tmp_path, monkeypatch):
    def broken(*args, **kwargs):
        raise RuntimeError("Expected all tensors to be on the same device")

    monkeypatch.setattr(gpu_check.train, "fit", broken)  # every full-profile run fails at its first fit
    rc = gpu_check.main(
        [
            "--device",
            "cpu",
            "--quick",
            "--methods",
            "elr,sla",
            "--parts",
            "full",
            "--out",
            str(tmp_path / "gc"),
        ]
    )
    rows = json.loads((tmp_path / "gc.json").read_text())["rows"]
    assert rc == 1 and len(rows) == 2
    assert all(r["status"].startswith("error: RuntimeError: Expected all tensors") for r in rows)


def test_notebook_part_runs_every_notebook_through_the_runner(gpu_check, monkeypatch):
    pytest.importorskip("papermill")
    pytest.importorskip("jupytext")
    from replikit import runner

    calls = []

    def fake_execute(method, profile=None, overrides=None, **kwargs):
        calls.append((method, profile, overrides))
        if method == "elr":
            raise RuntimeError("kernel died")

    monkeypatch.setattr(runner, "execute", fake_execute)
    rows = gpu_check.notebook_rows(["elr", "dann"], gpu_check.torch.device("cpu"), deadline=float("inf"))
    assert calls == [("elr", "smoke", {"device": "cpu"}), ("dann", "smoke", {"device": "cpu"})]
    assert rows[0]["status"] == "error: RuntimeError: kernel died" and rows[1]["status"] == "ok"


def test_fit_recorder_hands_the_epoch_to_an_evaluate_that_takes_it(gpu_check):
    torch = gpu_check.torch
    cpu = torch.device("cpu")
    w = torch.zeros(2, requires_grad=True)
    seen = []

    def evaluate(e):  # as ELR's: the epoch decides what is measured
        seen.append(e)
        return {"acc": 1.0}

    recorder = gpu_check.FitRecorder(cpu, steps=2)
    history = recorder(
        lambda idx, p: (w * idx.float().mean()).sum(),
        [w],
        64,
        epochs=3,
        batch_size=8,
        seed=0,
        device=cpu,
        evaluate=evaluate,
    )
    assert seen == [1] and [h["epoch"] for h in history] == [1, 2, 3] and history[0]["acc"] == 1.0
    assert recorder.calls[0]["run_steps"] == 2 and recorder.calls[0]["steps_per_epoch"] == 8


def test_a_method_past_its_timeout_is_cut_off_and_the_next_one_runs(gpu_check, tmp_path, monkeypatch):
    import signal
    import time

    torch = gpu_check.torch
    cpu = torch.device("cpu")
    real_fit = gpu_check.train.fit

    def method(step_s):
        class Method:
            @staticmethod
            def run(cfg):
                w = torch.zeros(1, requires_grad=True)

                def step(idx, p):
                    time.sleep(step_s)
                    return w.sum()

                gpu_check.train.fit(step, [w], 64, epochs=5, batch_size=8, seed=0, device=cpu)

        return Method

    # elr never ends (cut off inside the fit recorder); dann's two steps take no time
    monkeypatch.setattr(gpu_check, "get_method", lambda m: method(30.0 if m == "elr" else 0.0))
    t0 = time.perf_counter()
    rc = gpu_check.main(
        ["--device", "cpu", "--quick", "--methods", "elr,dann", "--parts", "full", "--method-timeout", "0.5"]
        + ["--out", str(tmp_path / "gc")]
    )
    rows = json.loads((tmp_path / "gc.json").read_text())["rows"]
    assert rc == 1 and [r["method"] for r in rows] == ["elr", "dann"]
    assert rows[0]["status"] == "timeout after 0.5 s" and rows[0]["seconds"] < 5
    assert "time.sleep(step_s)" in rows[0]["trace"]  # where it was cut off
    assert rows[1]["status"] == "ok" and rows[1]["fit_calls"] == 1  # a fresh recorder saw dann's fit
    assert time.perf_counter() - t0 < 10
    assert gpu_check.train.fit is real_fit  # the recorder is gone again
    assert signal.getitimer(signal.ITIMER_REAL) == (0.0, 0.0)  # and the timer disarmed


def test_projection_scales_the_time_inside_a_rest_scale_function(gpu_check):
    from types import SimpleNamespace

    one = {"eval_s": 0.0, "run_steps": 1, "steps_per_epoch": 1, "epochs": 1}
    calls = [dict(one, step_s=1.0), dict(one, step_s=2.0)]  # the first fit ran inside the scaled function
    inside = SimpleNamespace(seconds=4.0, fit_calls=[0])  # 3 s of it outside its fit (GraNd passes)
    total, _ = gpu_check.projection(calls, 10.0, 2, inside, factor=10)
    assert total == pytest.approx(((1 * 10 + 2) + 3 * 10 + (10 - 3 - 3)) * 2)  # fits, scaled rest, rest
    assert gpu_check.projection(calls, 10.0, 2)[0] == pytest.approx(10.0 * 2)  # nothing scaled: as before
    for method, (key, fn_name) in gpu_check.REST_SCALE.items():  # the names still exist
        assert hasattr(gpu_check.get_method(method), fn_name)
        assert gpu_check.BOUNDED[method][0][key] < getattr(gpu_check.load_config(method, "full"), key)
