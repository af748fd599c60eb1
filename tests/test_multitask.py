"""The multi-task trainer's math on hand-made losses and gradients."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torch import nn

from replikit.families import multitask as mt


def test_uncertainty_loss_value_by_hand():
    losses = torch.tensor([2.0, 0.5])
    s = torch.tensor([0.0, math.log(2.0)])
    factors = torch.tensor([0.5, 1.0])  # regression, classification
    # 0.5 * e^0 * 2 + 0  +  1 * e^{-log 2} * 0.5 + 0.5 log 2
    expected = 1.0 + 0.25 + 0.5 * math.log(2.0)
    assert mt.uncertainty_loss(losses, s, factors).item() == pytest.approx(expected, rel=1e-6)


def test_uncertainty_gradient_on_log_variance_matches_closed_form():
    losses = torch.tensor([3.0, 0.7, 0.2])
    factors = torch.tensor([0.5, 1.0, 0.5])
    s = torch.tensor([0.3, -1.0, 2.0], requires_grad=True)
    mt.uncertainty_loss(losses, s, factors).backward()
    closed = -factors * torch.exp(-s.detach()) * losses + 0.5  # d/ds_i [c e^{-s} L + s/2]
    torch.testing.assert_close(s.grad, closed)


def test_uncertainty_optimum_is_log_of_twice_weighted_loss():
    losses = torch.tensor([4.0, 0.25])
    factors = torch.tensor([0.5, 1.0])
    s = torch.log(2 * factors * losses).requires_grad_(True)  # s* = log(2 c L)
    mt.uncertainty_loss(losses, s, factors).backward()
    torch.testing.assert_close(s.grad, torch.zeros(2), atol=1e-6, rtol=0)
    # effective weight c e^{-s*} = 1 / (2 L)
    torch.testing.assert_close(factors * torch.exp(-s.detach()), 1 / (2 * losses))


def test_uncertainty_weighting_factors_follow_task_kinds():
    tasks = [mt.Task("c", "classification", 10), mt.Task("r", "regression", 1)]
    w = mt.Uncertainty(tasks, init_log_var=0.0)
    torch.testing.assert_close(w.weights(), torch.tensor([1.0, 0.5]))
    assert w.parameters()[0].requires_grad


def test_gradnorm_target_by_hand():
    norms = torch.tensor([1.0, 3.0])
    w = torch.tensor([1.0, 1.0])
    losses, initial = torch.tensor([2.0, 1.0]), torch.tensor([1.0, 1.0])
    # G = [1, 3], G_bar = 2; L~ = [2, 1], r = [4/3, 2/3]; alpha 1 -> targets 2 r
    target = mt.gradnorm_targets(norms, w, losses, initial, alpha=1.0)
    torch.testing.assert_close(target, torch.tensor([8 / 3, 4 / 3]))
    # alpha 0: every task gets the mean norm
    torch.testing.assert_close(mt.gradnorm_targets(norms, w, losses, initial, 0.0), torch.tensor([2.0, 2.0]))


def test_gradnorm_weight_update_direction():
    norms = torch.tensor([1.0, 10.0])  # task 1's gradient is 10x task 0's
    w = torch.ones(2)
    same = torch.tensor([1.0, 1.0])  # equal training rates: r = 1, target = G_bar = 5.5
    grad = mt.gradnorm_weight_grad(norms, w, same, same, alpha=0.12)
    torch.testing.assert_close(grad, torch.tensor([-1.0, 10.0]))  # sign(G - target) * ||grad L||
    w_next = w - 0.01 * grad  # a descent step raises the weak task's weight, lowers the strong one's
    assert w_next[0] > 1.0 > w_next[1]


def test_gradnorm_slow_task_gets_a_larger_target():
    norms = torch.tensor([2.0, 2.0])
    w = torch.ones(2)
    losses, initial = torch.tensor([0.9, 0.1]), torch.tensor([1.0, 1.0])  # task 0 trained less
    grad = mt.gradnorm_weight_grad(norms, w, losses, initial, alpha=1.0)
    assert grad[0] < 0 < grad[1]


def test_renormalize_sums_to_task_count_and_stays_positive():
    w = torch.tensor([3.0, 1.0, -0.5, 0.0])
    out = mt.renormalize(w)
    assert out.sum().item() == pytest.approx(4.0)
    assert (out > 0).all()
    torch.testing.assert_close(out[0] / out[1], torch.tensor(3.0))


def _tiny_model(tasks):
    torch.manual_seed(0)
    return mt.MultiTaskNet(mt.mlp_trunk(3, 5, 2), 5, tasks, zero_heads=False)


def test_per_task_grad_norms_match_separate_backward_passes():
    tasks = [mt.Task("a", "regression", 2), mt.Task("b", "regression", 1)]
    model = _tiny_model(tasks)
    x = torch.randn(7, 3)
    ys = [torch.randn(7, 2), 10 * torch.randn(7, 1)]
    losses = mt.task_losses(model(x), ys, tasks)
    got = mt.per_task_grad_norms(losses, model.shared_layer())
    for i in range(2):
        model.zero_grad()
        mt.task_losses(model(x), ys, tasks)[i].backward()
        assert got[i].item() == pytest.approx(model.shared_layer()[0].grad.norm().item(), rel=1e-5)


def test_gradnorm_combine_steps_weights_and_returns_loss_with_old_weights():
    tasks = [mt.Task("a", "regression", 1), mt.Task("b", "regression", 1)]
    model = _tiny_model(tasks)
    x = torch.randn(16, 3)
    ys = [0.01 * torch.randn(16, 1), 100 * torch.randn(16, 1)]
    gn = mt.GradNorm(2, model.shared_layer(), alpha=0.12, lr=0.1)
    losses = mt.task_losses(model(x), ys, tasks)
    total = gn.combine(losses)
    assert total.item() == pytest.approx(losses.sum().item(), rel=1e-6)  # w(t) = 1 in this step
    w = gn.weights()
    assert w.sum().item() == pytest.approx(2.0, rel=1e-6)
    assert w[0] > 1.0 > w[1]  # the small-gradient task is weighted up
    total.backward()  # the graph survives the norm computation
    assert len(gn.trace) == 1


def test_equal_and_fixed_combine():
    losses = torch.tensor([1.0, 2.0, 3.0])
    assert mt.Equal(3).combine(losses).item() == pytest.approx(6.0)
    assert mt.Fixed([0.5, 0.0, 2.0]).combine(losses).item() == pytest.approx(6.5)


def test_task_losses_mse_and_cross_entropy():
    tasks = [mt.Task("c", "classification", 2), mt.Task("r", "regression", 1)]
    outs = [torch.tensor([[0.0, 0.0]]), torch.tensor([[1.0]])]
    ys = [torch.tensor([1]), torch.tensor([[3.0]])]
    torch.testing.assert_close(mt.task_losses(outs, ys, tasks), torch.tensor([math.log(2.0), 4.0]))


def test_normalized_errors_mean_predictor_and_chance_are_one():
    tasks = [mt.Task("c", "classification", 2), mt.Task("r", "regression", 1)]
    y = torch.tensor([[1.0], [3.0]])
    outs = [torch.tensor([[1.0, 0.0], [0.0, 1.0]]), torch.full((2, 1), 2.0)]
    ys = [torch.tensor([1, 1]), y]
    var = [1.0, float(((y - 2.0) ** 2).mean())]
    err = mt.normalized_errors(outs, ys, tasks, var)
    np.testing.assert_allclose(err, [0.5 / 0.5, 1.0])


def test_zero_heads_start_at_the_mean_predictor():
    tasks = [mt.Task("r", "regression", 3)]
    model = mt.build("mlp", (4,), tasks, width=8, depth=2)
    out = model(torch.randn(5, 4))[0]
    assert torch.count_nonzero(out) == 0
    assert isinstance(model.shared_layer()[0], nn.Parameter) and model.shared_layer()[0].shape == (8, 8)


def test_image_statistics_by_hand():
    img = np.zeros((1, 1, 5, 4), dtype=np.float32)
    img[0, 0, 2, 3] = 1.0  # one lit pixel: middle row, last column
    assert mt.image_statistic(img, "row_centroid")[0] == pytest.approx(0.5)
    assert mt.image_statistic(img, "col_centroid")[0] == pytest.approx(1.0)
    assert mt.image_statistic(img, "mass")[0] == pytest.approx(1 / 20)
    assert mt.image_statistic(img, "row_spread")[0] == pytest.approx(0.0, abs=1e-6)
    with pytest.raises(ValueError):
        mt.image_statistic(img, "nope")


def test_fit_learns_two_scaled_tasks():
    torch.manual_seed(0)
    tasks = [mt.Task("a", "regression", 1), mt.Task("b", "classification", 2)]
    x = torch.randn(256, 4)
    ys = [5 * x[:, :1], (x[:, 1] > 0).long()]
    model = mt.build("mlp", (4,), tasks, width=16, depth=2)
    w = mt.Uncertainty(tasks)
    hist = mt.fit(
        model, w, x, ys, epochs=15, batch_size=32, seed=0, lr=1e-2, optimizer="adam", weighting_lr=0.05
    )
    assert hist[-1]["loss_0"] < 0.2 * hist[0]["loss_0"]
    assert "w_1" in hist[-1]
    assert not torch.allclose(w.log_vars.detach(), torch.zeros(2))


def test_best_by_validation_uses_the_validation_column_and_skips_diverged_runs():
    import pandas as pd

    table = pd.DataFrame(
        {
            "group": ["a", "a", "a", "b", "b", "c"],
            "val": [0.3, 0.2, np.inf, np.nan, 0.5, np.inf],
            "test": [0.1, 0.9, 0.0, 0.0, 0.7, 0.0],
        }
    )
    best = mt.best_by_validation(table, ["group"], "val").set_index("group")
    assert best.loc["a", "test"] == 0.9  # lowest validation, not lowest test
    assert best.loc["b", "test"] == 0.7  # a NaN validation score never wins
    assert "c" not in best.index  # every run of the group diverged: no winner


def _pack_problem():
    g = torch.Generator().manual_seed(3)
    x = torch.randn(160, 4, generator=g)
    tasks = [mt.Task("c", "classification", 3), mt.Task("r", "regression", 1), mt.Task("s", "regression", 2)]
    ys = [(x[:, 0] > 0).long() + (x[:, 1] > 0).long(), 10 * x[:, 2:3], 0.1 * x[:, :2] ** 2]
    return x, tasks, ys


def _pack_member(kind, tasks, seed):
    torch.manual_seed(seed)
    model = mt.build("mlp", (4,), tasks, width=12, depth=2)
    if kind == "equal":
        return model, mt.Equal(len(tasks))
    if kind == "fixed":
        return model, mt.Fixed([1.0, 0.1, 10.0])
    if kind == "uncertainty":
        return model, mt.Uncertainty(tasks, init_log_var=0.5)
    return model, mt.GradNorm(len(tasks), model.shared_layer(), alpha=0.5, lr=0.05)


@pytest.mark.parametrize("optimizer", ["adam", "sgd"])
def test_each_pack_member_trains_like_its_own_multitask_run(optimizer):
    """fit_pack: every weighting (equal, fixed, uncertainty, GradNorm) and its own learning rate, in one
    pack, gives each member the weights, history and final task weights of its run alone (:func:`fit`)."""
    x, tasks, ys = _pack_problem()
    kinds, seeds = ["equal", "fixed", "uncertainty", "gradnorm", "gradnorm"], [1, 2, 3, 4, 5]
    lrs = [0.01, 0.003, 0.01, 0.01, 0.02] if optimizer == "adam" else [0.004, 0.002, 0.004, 0.004, 0.008]
    kw = dict(epochs=3, batch_size=32, seed=7, optimizer=optimizer, weight_decay=1e-4, weighting_lr=0.03)
    members = [_pack_member(k, tasks, s) for k, s in zip(kinds, seeds)]
    out = mt.fit_pack([m for m, _ in members], [w for _, w in members], x, ys, width=8, lr=lrs, **kw)
    for kind, seed, lr, got in zip(kinds, seeds, lrs, out):
        model, weighting = _pack_member(kind, tasks, seed)
        history = mt.fit(model, weighting, x, ys, lr=lr, **kw)
        for k, v in model.state_dict().items():
            torch.testing.assert_close(got["state"][k], v, atol=2e-5, rtol=1e-4, msg=f"{kind} {k}")
        torch.testing.assert_close(got["weights"], weighting.weights(), atol=1e-5, rtol=1e-4)
        assert len(got["history"]) == len(history) == 3
        for mine, theirs in zip(got["history"], history):
            assert mine.keys() == theirs.keys()
            for key in theirs:
                assert mine[key] == pytest.approx(theirs[key], rel=1e-4, abs=1e-6), (kind, key)
        if kind == "gradnorm":
            assert len(got["trace"]) == len(weighting.trace) == 15
            torch.testing.assert_close(
                torch.stack(got["trace"]), torch.stack(weighting.trace), atol=1e-5, rtol=1e-4
            )
        else:
            assert got["trace"] == []


def test_fused_heads_give_each_heads_outputs():
    x, tasks, _ = _pack_problem()
    model, _ = _pack_member("equal", tasks, 1)
    plain = model(x)
    model.fused = True  # what fit_pack sets on a pack's template: one matmul for all heads
    fused = model(x)
    del model.fused
    assert [o.shape for o in fused] == [o.shape for o in plain] == [(160, 3), (160, 1), (160, 2)]
    for a, b in zip(fused, plain):
        torch.testing.assert_close(a, b)


def test_a_pack_of_same_size_regression_tasks_takes_one_stacked_loss(monkeypatch):
    """GradNorm's tasks (regression, one output size): the pack indexes their stacked targets once and
    takes one loss for all tasks a step, and each member still trains as its run alone; the template's
    fused heads are switched back off afterwards."""
    g = torch.Generator().manual_seed(5)
    x = torch.randn(160, 4, generator=g)
    tasks = [mt.Task(f"r{i}", "regression", 2) for i in range(3)]
    ys = [(i + 1) * x[:, i : i + 2] ** 2 for i in range(3)]
    calls = []
    real = mt.pack_regression_losses
    monkeypatch.setattr(mt, "pack_regression_losses", lambda o, t: calls.append(t.shape) or real(o, t))
    kinds, seeds, lrs = ["equal", "gradnorm", "gradnorm"], [1, 2, 3], [0.01, 0.01, 0.02]
    kw = dict(epochs=2, batch_size=32, seed=7, optimizer="adam")
    members = [_pack_member(k, tasks, s) for k, s in zip(kinds, seeds)]
    out = mt.fit_pack([m for m, _ in members], [w for _, w in members], x, ys, width=4, lr=lrs, **kw)
    assert calls and calls[0] == (3, 4, 32, 2)  # (tasks, slots, batch, outputs)
    assert members[0][0].fused is False and "fused" not in vars(members[0][0])
    for kind, seed, lr, got in zip(kinds, seeds, lrs, out):
        model, weighting = _pack_member(kind, tasks, seed)
        history = mt.fit(model, weighting, x, ys, lr=lr, **kw)
        for k, v in model.state_dict().items():
            torch.testing.assert_close(got["state"][k], v, atol=2e-5, rtol=1e-4, msg=f"{kind} {k}")
        assert got["history"][-1]["train_loss"] == pytest.approx(history[-1]["train_loss"], rel=1e-4)


def test_a_diverging_pack_member_is_recorded_and_the_pack_trains_on():
    x, tasks, ys = _pack_problem()
    members = [_pack_member("equal", tasks, 1), _pack_member("equal", tasks, 1)]
    kw = dict(width=4, epochs=2, batch_size=32, seed=7, optimizer="sgd")
    out = mt.fit_pack([m for m, _ in members], [w for _, w in members], x, ys, lr=[0.05, 1e6], **kw)
    assert not math.isfinite(out[1]["history"][-1]["train_loss"])
    assert [math.isfinite(r["train_loss"]) for r in out[0]["history"]] == [True, True]
    with pytest.raises(ValueError, match="same tasks"):
        other = _pack_member("equal", tasks[:2], 1)
        mt.fit_pack([members[0][0], other[0]], [members[0][1], other[1]], x, ys, lr=0.05, **kw)
