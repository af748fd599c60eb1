"""The commit a verdict names: ``-dirty`` for edited source, never for what the pipeline itself writes
or for files a run does not read."""

from conftest import commit, sh

from replikit.results import RUN_SOURCES, git_commit


def test_pipeline_outputs_do_not_make_a_commit_dirty(tmp_path):
    files = ["src/mod.py", "notebooks/m.py", "params.yaml", "README.md", "tests/t.py"]
    files += ["dvc.lock", "results/m/verdict.json", "reports/report.md"]
    for f in files:
        (tmp_path / f).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / f).write_text("0\n")
    sh("git", "init", "-q", cwd=tmp_path)
    commit(tmp_path, "init")
    sha = sh("git", "rev-parse", "HEAD", cwd=tmp_path).strip()
    assert git_commit(tmp_path) == sha

    # what a running `dvc repro` rewrites while later stages run, and files no run reads
    for f in ("dvc.lock", "results/m/verdict.json", "reports/report.md", "README.md", "tests/t.py"):
        (tmp_path / f).write_text("1\n")
    assert git_commit(tmp_path) == sha
    assert git_commit(tmp_path / "results") == sha  # the whole repository, wherever it is asked from

    # the source a run reads: an edited module, notebook or params.yaml is a dirty tree
    assert {"src", "notebooks", "params.yaml"} <= set(RUN_SOURCES)
    for f in ("src/mod.py", "notebooks/m.py", "params.yaml"):
        (tmp_path / f).write_text("1\n")
        assert git_commit(tmp_path) == sha + "-dirty"
        assert git_commit(tmp_path / "results") == sha + "-dirty"
        sh("git", "checkout", "--", f, cwd=tmp_path)
    assert git_commit(tmp_path) == sha


def test_outside_a_repository(tmp_path):
    assert git_commit(tmp_path) == "unknown"
