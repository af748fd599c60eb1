"""The runner: validates before a kernel starts, rejects undeclared parameters, fails without damage."""

import json
import shutil

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
    assert "unknown method 'nope'" in capsys.readouterr().err
    with pytest.raises(runner.RunnerError, match="expected KEY=VALUE"):
        runner.parse_overrides(["noise_rate"])
    assert runner.parse_overrides(["noise_rate=0.6", "model=mlp", "sweep_rates=[0.1, 0.2]"]) == {
        "noise_rate": 0.6, "model": "mlp", "sweep_rates": [0.1, 0.2]}


@pytest.mark.slow
def test_failing_notebook_keeps_the_executed_copy_and_the_old_results(tmp_path):
    """A notebook that raises: non-zero exit, traceback kept in logs/, previous results untouched."""
    shutil.copy(ROOT / "params.yaml", tmp_path / "params.yaml")
    (tmp_path / "notebooks").mkdir()
    source = (ROOT / "notebooks" / "elr.py").read_text()
    broken = source.replace("outcome = elr.run(cfg)", "raise RuntimeError('boom: injected failure')")
    assert broken != source
    (tmp_path / "notebooks" / "elr.py").write_text(broken)
    previous = tmp_path / "results" / "elr"
    previous.mkdir(parents=True)
    (previous / "verdict.json").write_text(json.dumps({"old": True}))

    with pytest.raises(runner.RunnerError, match="notebook failed") as err:
        runner.execute("elr", profile="smoke", root=tmp_path)
    failed = tmp_path / "logs" / "elr.failed.ipynb"
    assert str(failed) in str(err.value) and "boom: injected failure" in failed.read_text()
    assert json.loads((previous / "verdict.json").read_text()) == {"old": True}
    assert sorted(p.name for p in previous.iterdir()) == ["verdict.json"]
