"""Shared fixtures: the project root, a smoke-profile notebook runner, the verdict contract check."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
os.environ.setdefault("REPLIKIT_PROGRESS", "0")


def benchmark(name: str):
    """``benchmarks/<name>.py`` as a module (the benchmarks are scripts, not a package), loaded once."""
    import importlib.util

    if name not in sys.modules:
        spec = importlib.util.spec_from_file_location(name, ROOT / "benchmarks" / f"{name}.py")
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module  # before running it: dataclasses and pickling look the module up
        spec.loader.exec_module(module)
    return sys.modules[name]


@pytest.fixture(autouse=True)
def _in_root(monkeypatch):
    """Tests run from the project root, as users and DVC do."""
    monkeypatch.chdir(ROOT)


def check_verdict(path: Path, method: str, profile: str) -> dict:
    """Validate results/<method>/verdict.json against the contract (replikit.report.VerdictFile)."""
    from replikit.report import VerdictFile

    raw = json.loads(path.read_text())
    verdict = VerdictFile.model_validate(raw)
    assert verdict.method == method and verdict.profile == profile
    assert verdict.evidence is (profile != "smoke")
    assert verdict.claims, "a verdict without claims"
    assert verdict.machine["cores"] >= 1 and verdict.machine["cpu_capability"], "which machine drew it"
    for claim in verdict.claims:
        assert claim.id.startswith(f"{method}.")
        if claim.ci_low is not None:
            assert claim.ci_low <= claim.effect <= claim.ci_high
    return raw


# ------------------------------------------------------------------ a temporary copy of the repository


def sh(*args, cwd, check=True, **kwargs) -> str:
    """Run a command as a user would (the venv's dvc/python first on PATH); its stdout + stderr."""
    done = subprocess.run(args, cwd=cwd, env=tool_env(), capture_output=True, text=True, **kwargs)
    if check:
        assert done.returncode == 0, f"{' '.join(args)} failed:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
    return done.stdout + done.stderr


def tool_env() -> dict[str, str]:
    return dict(os.environ, PATH=f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}")


def copy_repo(dest: Path, methods: list[str], profile: str = "smoke") -> Path:
    """A fresh clone's state of the checkout (no results, no reports) in ``dest``, as a git repo, with
    ``params.yaml`` on ``profile`` and only ``methods`` in the pipeline."""
    import yaml

    files = subprocess.run(
        ["git", "ls-files", "-co", "--exclude-standard"], cwd=ROOT, capture_output=True, text=True, check=True
    ).stdout.split()
    for f in files:
        if (ROOT / f).is_file() and not f.startswith(("results/", "reports/")):
            (dest / f).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(ROOT / f, dest / f)
    params = yaml.safe_load((dest / "params.yaml").read_text())
    params["profile"], params["methods"] = profile, methods
    (dest / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    sh("git", "init", "-q", cwd=dest)
    commit(dest, "copy")
    return dest


def commit(repo: Path, message: str) -> None:
    sh("git", "add", "-A", cwd=repo)
    sh("git", "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", message, cwd=repo)


@pytest.fixture(scope="session")
def smoke_repo(tmp_path_factory) -> Path:
    """One copy of the repository with ELR reproduced on the smoke profile and everything committed,
    shared by the slow tests that need a pipeline that has already run (tests restore what they edit)."""
    repo = copy_repo(tmp_path_factory.mktemp("smoke") / "repo", ["elr"])
    sh("dvc", "repro", cwd=repo)
    commit(repo, "dvc repro")
    return repo
