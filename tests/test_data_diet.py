"""Data diet's scores and subsets on hand-made tensors, and a smoke run of the method."""

import dataclasses
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from replikit import claims, resume, sequential
from replikit.methods import data_diet as dd


def test_el2n_is_the_l2_distance_of_softmax_to_the_one_hot_label():
    logits = torch.tensor([[0.0, 0.0], [math.log(3.0), 0.0], [0.0, math.log(3.0)]])
    labels = torch.tensor([0, 0, 0])
    # p = (1/2, 1/2), (3/4, 1/4), (1/4, 3/4); error vectors (-1/2, 1/2), (-1/4, 1/4), (-3/4, 3/4)
    expected = torch.tensor([0.5, 0.25, 0.75]) * math.sqrt(2)
    assert torch.allclose(dd.el2n(logits, labels), expected, atol=1e-6)
    assert dd.el2n(torch.tensor([[50.0, 0.0, 0.0]]), torch.tensor([0])).item() == pytest.approx(0.0, abs=1e-6)


def _loop_grad_norms(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    norms = []
    for xi, yi in zip(x, y):
        model.zero_grad()
        F.cross_entropy(model(xi[None]), yi[None]).backward()
        norms.append(torch.sqrt(sum(p.grad.pow(2).sum() for p in model.parameters())))
    return torch.stack(norms)


def test_grand_via_vmap_matches_a_per_example_loop():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(5, 7), nn.Tanh(), nn.Linear(7, 3))
    x, y = torch.randn(11, 5), torch.randint(0, 3, (11,))
    expected = _loop_grad_norms(model, x, y)
    assert torch.allclose(dd.grand(model, x, y, batch_size=4), expected, atol=1e-5)  # batches of 4, 4, 3


def test_grand_of_a_linear_softmax_model_in_closed_form():
    # logits = W x + b: dL/dW = (p - e_y) x^T, dL/db = p - e_y, so the norm is EL2N * sqrt(|x|^2 + 1)
    torch.manual_seed(1)
    model = nn.Linear(4, 3)
    x, y = torch.randn(6, 4), torch.randint(0, 3, (6,))
    with torch.no_grad():
        expected = dd.el2n(model(x), y) * torch.sqrt(x.pow(2).sum(1) + 1)
    assert torch.allclose(dd.grand(model, x, y), expected, atol=1e-5)


def test_grand_on_the_suite_cnn_matches_the_loop_and_leaves_the_mode():
    torch.manual_seed(2)
    model = dd.models.build("cnn1d", (40,), 10, width=4)
    x, y = torch.randn(5, 40), torch.randint(0, 10, (5,))
    model.train()
    scores = dd.grand(model, x, y, batch_size=2)
    assert model.training
    assert torch.allclose(scores, _loop_grad_norms(model, x, y), atol=1e-5)


def test_select_hardest_easiest_and_offset():
    scores = np.array(
        [0.1, 0.9, 0.5, 0.7, 0.3, 0.8, 0.2, 0.6, 0.4, 1.0]
    )  # hardest first: 9 1 5 3 7 2 8 4 6 0
    assert dd.select(scores, 0.3, "hardest").tolist() == [1, 5, 9]
    assert dd.select(scores, 0.3, "easiest").tolist() == [0, 4, 6]
    assert dd.select(scores, 0.3, "offset", offset=0.2).tolist() == [3, 5, 7]  # skips 9 and 1
    assert dd.select(scores, 0.5, "offset", offset=0.0).tolist() == dd.select(scores, 0.5, "hardest").tolist()
    with pytest.raises(ValueError):
        dd.select(scores, 0.9, "offset", offset=0.2)
    ties = np.array([1.0, 1.0, 1.0, 0.0])
    assert dd.select(ties, 0.5, "hardest").tolist() == [0, 1]  # ties broken by index: deterministic


def test_select_per_class_keeps_the_same_fraction_of_every_class():
    scores = np.array([0.9, 0.8, 0.7, 0.6, 0.1, 0.2, 0.3, 0.4])
    labels = np.array([0, 0, 0, 0, 1, 1, 1, 1])
    assert dd.select(scores, 0.5, "hardest").tolist() == [0, 1, 2, 3]  # one ranking: class 1 is gone
    assert dd.select_per_class(scores, labels, 0.5, "hardest").tolist() == [0, 1, 6, 7]
    assert dd.select_per_class(scores, labels, 0.5, "easiest").tolist() == [2, 3, 4, 5]
    assert dd.select_per_class(scores, labels, 0.5, "offset", offset=0.25).tolist() == [1, 2, 5, 6]


def test_config_rejects_impossible_designs():
    with pytest.raises(ValueError, match="offset"):
        dd.Config(keep_fractions=[0.97], rule_fractions={})
    with pytest.raises(ValueError, match="score_epoch"):
        dd.Config(epochs=2, score_epoch=3)
    with pytest.raises(ValueError, match="between 0 and 1"):
        dd.Config(keep_fractions=[1.0])
    assert dd.Config().fractions("easy") == [0.5] and dd.Config().fractions("el2n") == [0.3, 0.5, 0.7]


SMOKE = dict(
    profile="smoke",
    n_seeds=2,
    num_samples=1_500,
    val_size=100,
    width=8,
    epochs=2,
    score_epoch=1,
    score_inits=2,
    batch_size=64,
    keep_fractions=[0.5],
    workers=1,
    device="cpu",
)


def judged_on(result, runs):
    """``result`` is its claim judged on ``runs``: its effect and interval those of the per-seed effects
    (treatment - baseline paired by seed, or the claim's statistic), its verdict the decision on them."""
    claim = result.claim
    if claim.statistic is not None:
        effects = claim.statistic(runs)
    else:
        t = runs[runs["arm"] == claim.treatment].set_index("seed")[claim.metric]
        b = runs[runs["arm"] == claim.baseline].set_index("seed")[claim.baseline_metric or claim.metric]
        effects = (t - b.loc[t.index]) * (1 if claim.higher_is_better else -1)
    mean, low, high = claims.mean_ci(effects.to_numpy(), 1 - result.alpha)
    assert (result.n_seeds, result.effect, result.ci_low, result.ci_high) == pytest.approx(
        (len(effects), mean, low, high)
    ), claim.id
    return result.verdict == claims.decide(claim, mean, low, high)


def test_smoke_run_pairs_every_arm_by_seed_and_judges(tmp_path, monkeypatch):
    """Every arm of every seed runs, each pruned arm keeps half of the data for as many steps as the full
    one, and each claim is judged on the returned runs; besides the paper's claims, two that pair the full
    arm with itself (an effect of exactly 0 +- 0) are decided at once, whatever the sizes."""
    monkeypatch.setattr(resume, "store_folder", lambda root, method, cfg: tmp_path / "store")
    noninferior, superior = dd.CLAIMS[0], dd.CLAIMS[1]
    itself = dict(treatment="full", baseline="full")
    monkeypatch.setattr(
        dd,
        "CLAIMS",
        [
            *dd.CLAIMS,
            dataclasses.replace(noninferior, id="full_no_worse_than_itself", **itself),
            dataclasses.replace(superior, id="full_beats_itself", **itself),
        ],
    )
    cfg = dd.Config(**SMOKE)
    outcome, verdicts = sequential.replicate(dd, cfg)
    runs = outcome.runs
    arms = {"full"} | {f"{r}_50" for r in cfg.rules}
    assert set(runs["arm"]) == arms
    assert all(sorted(seeds) == [0, 1] for _, seeds in runs.groupby("arm")["seed"])
    n = runs.loc[runs["arm"] == "full", "n_kept"].iloc[0]
    assert (runs.loc[runs["arm"] != "full", "n_kept"] - 0.5 * n).abs().le(5).all()  # rounded per class
    # every arm trained the same number of steps: the same number of history rows (full-split epochs)
    assert outcome.history.groupby(["arm", "seed"]).size().eq(cfg.epochs).all()
    assert runs["test_acc"].between(0, 1).all()
    assert [v.claim for v in verdicts] == dd.CLAIMS
    assert all(judged_on(v, runs) for v in verdicts)
    assert [v.verdict for v in verdicts[-2:]] == ["reproduced", "not_reproduced"]


def test_select_trains_only_the_asked_arms_and_scores_only_where_needed(tmp_path, monkeypatch):
    monkeypatch.setattr(resume, "store_folder", lambda root, method, cfg: tmp_path / "store")
    cfg = dd.Config(**SMOKE)
    with resume.using(tmp_path / "store"):
        every = dd.run(cfg)
        only = dd.run(cfg, select=lambda arm, seed: seed == 0 or arm in ("full", "random_50"))
    runs = only.runs
    assert set(runs.loc[runs["seed"] == 1, "arm"]) == {"full", "random_50"}
    assert set(runs.loc[runs["seed"] == 0, "arm"]) == set(every.runs.loc[every.runs["seed"] == 0, "arm"])
    assert set(only.extras["scores"]) == {0}  # seed 1's arms rank by no score: no score runs for it
    key = ["arm", "seed"]
    merged = runs.merge(every.runs, on=key, suffixes=("", "_all"))
    assert len(merged) == len(runs) and (merged["test_acc"] == merged["test_acc_all"]).all()


def test_packed_arms_match_the_unpacked_runs(tmp_path, monkeypatch):
    """pack > 0: each seed's arms in one vmapped model; the same arms, subsets and step budget, close numbers
    (another draw: batched kernels sum in another order), independent of which arms share a pack."""
    cfg = dd.Config(**SMOKE)
    with resume.using(tmp_path / "one"):
        one = dd.run(cfg).runs.set_index(["arm", "seed"]).sort_index()
    with resume.using(tmp_path / "packed"):
        out = dd.run(cfg.model_copy(update={"pack": 16}))
    runs = out.runs.set_index(["arm", "seed"]).sort_index()
    assert list(runs.index) == list(one.index)
    assert (runs["n_kept"] == one["n_kept"]).all()
    assert (runs["test_acc"] - one["test_acc"]).abs().max() < 0.03
    assert out.history.groupby(["arm", "seed"]).size().eq(cfg.epochs).all()
    # a smaller selection of arms in the same width: the arms it keeps are bit-identical
    with resume.using(tmp_path / "fewer"):
        fewer = dd.run(cfg.model_copy(update={"pack": 16}), select=lambda a, s: a in ("full", "el2n_50"))
    got = fewer.runs.set_index(["arm", "seed"])["test_acc"]
    assert (got == runs.loc[got.index, "test_acc"]).all()


def test_pack_refuses_resnets():
    with pytest.raises(ValueError, match="fills a GPU on its own"):
        dd.Config(dataset="cifar10", model="resnet18", crop_flip=True, pack=8)
