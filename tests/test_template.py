"""The starting point of a new method works: the template module runs and judges, the notebook is thin."""

import ast
import dataclasses

import jupytext
import pytest
import torch
import torch.nn.functional as F
from conftest import ROOT

from replikit import claims, resume, sequential
from replikit.methods import _template as T
from replikit.methods import available


def test_template_is_not_registered_but_runs_and_judges(tmp_path, monkeypatch):
    """The template's claim is judged on its runs: the mean treatment - baseline difference paired by seed,
    its t-interval and the decision on it; a claim of the baseline against itself (0 +- 0) is decided."""
    assert "_template" not in available()
    monkeypatch.setattr(resume, "store_folder", lambda root, method, cfg: tmp_path / "store")
    (claim,) = T.CLAIMS
    itself = dataclasses.replace(claim, id="baseline_beats_itself", treatment="baseline")
    monkeypatch.setattr(T, "CLAIMS", [claim, itself])
    cfg = T.Config(profile="smoke", n_seeds=2, epochs=1, train_subset=256, width=8, workers=1, device="cpu")
    outcome, (verdict, against_itself) = sequential.replicate(T, cfg)
    runs = outcome.runs
    assert set(runs["arm"]) == set(T.ARMS) and verdict.n_seeds == 2
    by_seed = runs.pivot(index="seed", columns="arm", values=claim.metric)
    mean, low, high = claims.mean_ci((by_seed[claim.treatment] - by_seed[claim.baseline]).to_numpy())
    assert (verdict.effect, verdict.ci_low, verdict.ci_high) == pytest.approx((mean, low, high))
    assert verdict.verdict == claims.decide(claim, mean, low, high)
    assert (against_itself.effect, against_itself.verdict) == (0.0, "not_reproduced")


def test_template_loss_is_label_smoothing_on_hand_made_logits():
    logits, labels = torch.tensor([[2.0, 0.0, -1.0]]), torch.tensor([0])
    logp = F.log_softmax(logits, 1)
    expected = -(0.9 * logp[0, 0] + 0.1 * logp.mean())
    assert T.smoothed_loss(logits, labels, 0.1).item() == pytest.approx(expected.item())
    assert T.smoothed_loss(logits, labels, 0.0).item() == pytest.approx(-logp[0, 0].item())


def test_template_notebook_is_thin_and_ends_like_every_notebook():
    nb = jupytext.read(ROOT / "notebooks" / "_template.py")
    code = "\n".join(c.source for c in nb.cells if c.cell_type == "code")
    assert [c for c in nb.cells if "parameters" in c.metadata.get("tags", [])]
    assert not [n for n in ast.walk(ast.parse(code)) if isinstance(n, (ast.FunctionDef, ast.ClassDef))]
    assert "sequential.replicate(method, cfg)" in code and "results.save(" in code
