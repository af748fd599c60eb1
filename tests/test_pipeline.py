"""`dvc repro` of the smoke profile in a temporary copy of the repository, as a user would run it."""

import json

import pytest
import yaml
from conftest import ROOT, check_verdict, copy_repo, sh


def ran(log):
    return sorted(line.split("'")[1] for line in log.splitlines() if line.startswith("Running stage"))


PIPELINE_METHODS = ["dann", "elr"]


@pytest.mark.slow
def test_dvc_repro_smoke_profile(tmp_path):
    # the pipeline's mechanics on two methods (test_notebooks runs every notebook): keeps CI short
    repo = copy_repo(tmp_path / "repo", PIPELINE_METHODS)
    params = yaml.safe_load((repo / "params.yaml").read_text())

    first = sh("dvc", "repro", cwd=repo)
    methods = params["methods"]
    assert ran(first) == sorted(["prepare", "report", *(f"method@{m}" for m in methods)])
    head = sh("git", "rev-parse", "HEAD", cwd=repo).strip()
    for m in methods:
        verdict = check_verdict(repo / "results" / m / "verdict.json", m, "smoke")
        # the committed source ran: the earlier stages' outputs and dvc.lock, rewritten while the later
        # stages ran, do not make it dirty
        assert verdict["git"] == head, m
    report = (repo / "reports" / "report.md").read_text()
    assert all(f"| {m}." in report and f"## {m}" in report for m in methods)
    assert (repo / "reports" / "report.html").stat().st_size > 10_000

    assert ran(sh("dvc", "repro", cwd=repo)) == []  # nothing changed: nothing reruns

    params["elr"]["noise_rate"] = 0.6
    (repo / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    assert "elr.noise_rate" in sh("dvc", "params", "diff", cwd=repo)
    assert ran(sh("dvc", "repro", cwd=repo)) == ["method@elr", "report"]
    rerun = json.loads((repo / "results" / "elr" / "verdict.json").read_text())
    assert rerun["config"]["noise_rate"] == 0.6
    assert rerun["git"] == head + "-dirty"  # params.yaml differs from the commit

    metrics = sh("dvc", "metrics", "show", "--json", cwd=repo)
    assert "elr.final_gain.effect" in metrics


def test_method_stages_depend_on_every_shared_module():
    """A new shared module must rerun the methods: dvc.yaml lists each top-level module, and folders."""
    import yaml

    stage = yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"]["method"]["do"]
    deps = set(stage["deps"])
    src = ROOT / "src" / "replikit"
    for path in src.iterdir():
        rel = path.relative_to(ROOT).as_posix()
        # report.py and lanes.py drive the pipeline (the report stage, dvc repro in lanes): no method
        # imports them, so no method's results can depend on them
        if path.name in ("methods", "report.py", "lanes.py", "__pycache__") or path.name.endswith(
            ".egg-info"
        ):
            continue
        assert rel in deps, f"dvc.yaml's method stage does not depend on {rel}"
