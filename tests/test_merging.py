"""The merging harness: task-vector arithmetic and TIES' trim / elect / disjoint mean on hand-made
state dicts with hand-computed answers, and the apparatus' transforms and checkpoints."""

from __future__ import annotations

import pydantic
import pytest
import torch

from replikit.families import merging as M


def t(*values):
    return torch.tensor(values, dtype=torch.float32)


PRE = {"w": t(0.5, 2.0, 4.0), "b": t(1.0), "steps": torch.tensor(7)}
FT = {"w": t(1.0, 2.0, 3.0), "b": t(-1.0), "steps": torch.tensor(9)}


def close(a: dict, b: dict) -> None:
    assert set(a) == set(b)
    for k, v in a.items():
        torch.testing.assert_close(v, b[k])


def test_task_vector_is_finetuned_minus_pretrained_and_skips_integer_buffers():
    close(M.task_vector(FT, PRE), {"w": t(0.5, 0.0, -1.0), "b": t(-2.0)})


def test_apply_scales_and_copies_buffers():
    tau = M.task_vector(FT, PRE)
    out = M.apply(PRE, tau, 2.0)
    torch.testing.assert_close(out["w"], t(1.5, 2.0, 2.0))
    torch.testing.assert_close(out["b"], t(-3.0))
    assert out["steps"].item() == 7
    close({k: v for k, v in M.apply(PRE, tau, 1.0).items() if k != "steps"}, {"w": FT["w"], "b": FT["b"]})


def test_add_negate_scale_sum():
    a, b = {"w": t(1.0, -2.0)}, {"w": t(0.5, 0.5)}
    close(M.add(a, b), {"w": t(1.5, -1.5)})
    close(M.negate(a), {"w": t(-1.0, 2.0)})
    close(M.scale(a, 0.5), {"w": t(0.5, -1.0)})
    close(M.sum_vectors([a, b, b]), {"w": t(2.0, -1.0)})
    close(M.ta_merge([a, b]), {"w": t(1.5, -1.5)})
    with pytest.raises(KeyError):
        M.add(a, {"v": t(1.0, 1.0)})
    with pytest.raises(ValueError):
        M.sum_vectors([])


def test_negated_vector_moves_the_other_way():
    tau = M.task_vector(FT, PRE)
    torch.testing.assert_close(M.apply(PRE, M.negate(tau), 1.0)["w"], t(0.0, 2.0, 5.0))


def test_flatten_unflatten_roundtrip():
    tau = {"a": t(1.0, 2.0), "m": torch.arange(6, dtype=torch.float32).view(2, 3)}
    vec = M.flatten(tau)
    assert vec.tolist() == [1, 2, 0, 1, 2, 3, 4, 5]
    close(M.unflatten(vec, tau), tau)


def test_trim_keeps_top_k_magnitudes_over_the_whole_vector():
    tau = {"a": t(0.1, -3.0, 0.5), "m": torch.tensor([[2.0, -0.2], [0.05, 1.0]])}  # 7 entries
    trimmed = M.trim(tau, 3 / 7)  # keeps |-3|, |2|, |1|, across both tensors
    torch.testing.assert_close(trimmed["a"], t(0.0, -3.0, 0.0))
    torch.testing.assert_close(trimmed["m"], torch.tensor([[2.0, 0.0], [0.0, 1.0]]))
    close(M.trim(tau, 1.0), tau)
    # at least one entry survives
    assert int((M.flatten(M.trim(tau, 0.01)) != 0).sum()) == 1
    with pytest.raises(ValueError):
        M.trim(tau, 0.0)


def test_elect_picks_the_sign_of_the_larger_total_mass():
    stacked = torch.tensor([[0.5, -2.0, 0.5, 0.0], [0.3, 1.0, 0.5, 0.0], [-0.1, 0.5, -2.0, 0.0]])
    # sums: 0.7, -0.5, -1.0, 0.0: the sign of the mass wins over the sign of the majority (columns 2, 3);
    # the zero sum of column 4 takes the majority of the elected signs (+, -, -): -
    assert M.elect(stacked).tolist() == [1.0, -1.0, -1.0, -1.0]


def test_elect_gives_a_zero_sum_the_majority_sign_and_the_merge_keeps_its_values():
    # column 0 cancels exactly (+1 - 1); the other columns elect +, +, -: majority +
    stacked = torch.tensor([[1.0, 2.0, 3.0, -1.0], [-1.0, 1.0, 1.0, 0.0]])
    gamma = M.elect(stacked)
    assert gamma.tolist() == [1.0, 1.0, 1.0, -1.0]
    # the disjoint mean of column 0 keeps the +1 (a sign-0 rule would have merged it to 0)
    torch.testing.assert_close(M.disjoint_mean(stacked, gamma), t(1.0, 1.5, 2.0, -1.0))


def test_elect_leaves_zero_when_the_elected_signs_are_tied():
    # elected +, -, and a zero sum: no majority, the zero stays 0
    assert M.elect(torch.tensor([[1.0, -1.0, 0.0]])).tolist() == [1.0, -1.0, 0.0]


def test_disjoint_mean_averages_only_agreeing_nonzero_values():
    stacked = torch.tensor([[0.5, -2.0, 0.5, 0.0], [0.3, 1.0, 0.0, 0.0], [-0.1, 0.5, -2.0, 0.0]])
    gamma = M.elect(stacked)  # [+, -, -, -] (the zero sum takes the majority sign)
    out = M.disjoint_mean(stacked, gamma)
    # col 0: mean(0.5, 0.3) = 0.4 (the -0.1 disagrees); col 1: -2 alone; col 2: -2 alone (the zero does
    # not count in the mean); col 3: nothing agrees -> 0
    torch.testing.assert_close(out, t(0.4, -2.0, -2.0, 0.0))


def test_ties_merge_end_to_end_by_hand():
    taus = [
        {"w": t(1.0, 0.1, -0.2, 2.0)},
        {"w": t(3.0, -0.1, 0.3, -1.0)},
        {"w": t(-0.5, 0.05, 0.4, -0.3)},
    ]
    # k = 0.5: each keeps its 2 largest magnitudes
    #   t1 -> [1, 0, 0, 2]; t2 -> [3, 0, 0, -1]; t3 -> [-0.5, 0, 0.4, 0] (drops 0.05, -0.3)
    # elect: sums [3.5, 0, 0.4, 1] -> [+, + (majority), +, +]; column 1 was trimmed everywhere: stays 0
    # disjoint mean: [mean(1, 3) = 2, 0, 0.4, 2]
    close(M.ties_merge(taus, 0.5), {"w": t(2.0, 0.0, 0.4, 2.0)})
    # k = 1 (no trim): sums [3.5, 0.05, 0.5, 0.7] -> all +; means over agreeing entries:
    #   [mean(1, 3), mean(0.1, 0.05), mean(0.3, 0.4), 2]
    close(M.ties_merge(taus, 1.0), {"w": t(2.0, 0.075, 0.35, 2.0)})


def test_ties_of_one_vector_is_its_trimmed_self():
    tau = {"w": t(1.0, -4.0, 0.5, 2.0)}
    close(M.ties_merge([tau], 0.5), {"w": t(0.0, -4.0, 0.0, 2.0)})


def test_best_coef_prefers_the_smaller_on_ties():
    assert M.best_coef({0.3: 0.9, 0.1: 0.9, 0.5: 0.8}) == 0.1


def test_transforms_2d_by_hand():
    x = torch.tensor([[[[1.0, 2.0], [3.0, 4.0]]]])  # (1, 1, 2, 2)
    rot90 = M.Task("r", "rot90").inputs(x)
    assert rot90[0, 0].tolist() == [[2.0, 4.0], [1.0, 3.0]]
    assert M.Task("h", "hflip").inputs(x)[0, 0].tolist() == [[2.0, 1.0], [4.0, 3.0]]
    assert M.Task("t", "transpose").inputs(x)[0, 0].tolist() == [[1.0, 3.0], [2.0, 4.0]]
    assert M.Task("a", "antitranspose").inputs(x)[0, 0].tolist() == [[4.0, 2.0], [3.0, 1.0]]
    assert len(set(M.TRANSFORMS_2D)) == 8
    outs = {tuple(M.Task(n, n).inputs(x).flatten().tolist()) for n in M.TRANSFORMS_2D}
    assert len(outs) == 8  # the 8 symmetries of the square are distinct


def test_transforms_1d_by_hand():
    x = t(1.0, 2.0, 3.0, 4.0).view(1, 4)
    assert M.Task("r", "reverse").inputs(x).tolist() == [[4.0, 3.0, 2.0, 1.0]]
    assert M.Task("s", "shift_half").inputs(x).tolist() == [[3.0, 4.0, 1.0, 2.0]]
    assert M.Task("d", "diff").inputs(x).tolist() == [[-3.0, 1.0, 1.0, 1.0]]


def test_permuted_task_is_a_fixed_bijection():
    task = M.negation_targets(1, "digits")[0]
    x = torch.arange(2 * 64, dtype=torch.float32).view(2, 1, 8, 8)
    a, b = task.inputs(x), task.inputs(x)
    assert torch.equal(a, b)
    assert not torch.equal(a, x)
    assert sorted(a[0].flatten().tolist()) == x[0].flatten().tolist()
    y = torch.arange(10)
    assert sorted(task.labels(y, 10).tolist()) == list(range(10))


def test_checkpoint_build_matches_functional_evaluation():
    torch.manual_seed(0)
    cfg = {"model": "mlp", "input_shape": (1, 8, 8), "width": 16, "depth": 1}
    enc = M.build_encoder(**cfg)
    state = {k: v + 0.1 for k, v in enc.state_dict().items()}
    ck = M.Checkpoint(state, cfg)
    x = torch.randn(5, 1, 8, 8)
    torch.testing.assert_close(ck.build()(x), torch.func.functional_call(enc, state, (x,)))


def test_config_rejects_bad_values():
    with pytest.raises(pydantic.ValidationError):
        M.MergingConfig(dataset="cifar100")
    with pytest.raises(pydantic.ValidationError):
        M.MergingConfig(lr=0.0)
    with pytest.raises(pydantic.ValidationError):
        M.MergingConfig(unknown_knob=1)


def test_packed_fine_tunes_match_the_fine_tunes_one_by_one():
    """pack > 0: a seed's task encoders fine-tuned in one vmapped model, each on its own task's inputs,
    labels and batch stream under its own frozen head, end where they end one by one (float tolerance:
    another draw); the pretrained encoder, heads and history rows are those of the plain suite."""
    from replikit.methods import load_config
    from replikit.methods import task_arithmetic as ta

    cfg = load_config("task_arithmetic", profile="smoke", overrides={"finetune_epochs": 2, "workers": 1})
    tasks = M.addition_tasks(M.addition_names(cfg.dataset, 3), M.source_names(cfg))
    plain = M.build_suite(cfg.model_copy(update={"pack": 0}), tasks, 0, ta.NAME)
    packed = M.build_suite(cfg.model_copy(update={"pack": 4}), tasks, 0, ta.NAME)
    close(packed.pretrained.state, plain.pretrained.state)
    for name, head in plain.heads.items():  # a packed suite fits its heads as one stacked problem
        torch.testing.assert_close(packed.heads[name].weight, head.weight, atol=1e-5, rtol=1e-4)
    assert list(packed.finetuned) == list(plain.finetuned) == [t.name for t in tasks]
    for name in plain.finetuned:
        mine, theirs = packed.finetuned[name].state, plain.finetuned[name].state
        assert mine.keys() == theirs.keys()
        for k in theirs:
            torch.testing.assert_close(mine[k], theirs[k], atol=1e-5, rtol=1e-4)
            assert not torch.equal(theirs[k], plain.pretrained.state[k])  # it trained
    assert [(r["stage"], r["task"], r["epoch"]) for r in packed.history] == [
        (r["stage"], r["task"], r["epoch"]) for r in plain.history
    ]
    losses = [(a["train_loss"], b["train_loss"]) for a, b in zip(packed.history, plain.history)]
    assert all(a == pytest.approx(b, rel=1e-4) for a, b in losses)
    # a packed suite evaluates a state on all its tasks in one pass: the accuracies of one task at a time
    assert packed.stacked and not plain.stacked
    names = list(packed.heads)
    state = M.apply(packed.pretrained.state, M.sum_vectors(packed.taus(names)), 0.5)
    for split in ("val", "test"):
        at_once = packed.accuracies(state, names, split)
        one_by_one = {n: packed.accuracy(state, n, split) for n in names}
        assert at_once == pytest.approx(one_by_one, abs=0.02)  # rounding may flip a near-tied example
        assert len(set(at_once.values())) > 1  # the tasks differ, so a mix-up of heads or labels shows


def test_stacked_heads_take_each_heads_own_steps():
    """fit_heads: each head with its own init, features and labels, as fit_head fits it alone (rounding
    apart), returned frozen; a mutation that trains every head on the first head's data fails here."""
    gen = torch.Generator().manual_seed(0)
    feats = [torch.randn(60, 8, generator=gen) for _ in range(3)]
    labels = [torch.randint(0, 4, (60,), generator=gen) for _ in range(3)]
    seeds = [11, 12, 13]
    together = M.fit_heads(feats, labels, 4, 30, seeds)
    for f, y, seed, head in zip(feats, labels, seeds, together):
        alone = M.fit_head(f, y, 4, 30, seed)
        torch.testing.assert_close(head.weight, alone.weight, atol=1e-5, rtol=1e-4)
        torch.testing.assert_close(head.bias, alone.bias, atol=1e-5, rtol=1e-4)
        assert not head.training and not head.weight.requires_grad
    assert not torch.allclose(together[0].weight, together[1].weight, atol=1e-2)
