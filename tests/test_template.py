"""The starting point of a new method works: the template module runs and judges, the notebook is thin."""

import ast

import jupytext
import pytest
import torch
import torch.nn.functional as F
from conftest import ROOT

from replikit import resume, sequential
from replikit.methods import _template as T
from replikit.methods import available


def test_template_is_not_registered_but_runs_and_judges(tmp_path, monkeypatch):
    assert "_template" not in available()
    monkeypatch.setattr(resume, "store_folder", lambda root, method, cfg: tmp_path / "store")
    cfg = T.Config(profile="smoke", n_seeds=2, epochs=1, train_subset=256, width=8, workers=1, device="cpu")
    outcome, (verdict,) = sequential.replicate(T, cfg)
    assert set(outcome.runs["arm"]) == set(T.ARMS) and verdict.n_seeds == 2
    assert verdict.verdict in ("reproduced", "not_reproduced", "inconclusive")


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
