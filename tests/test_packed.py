"""Packed runs (replikit.packed): each member trains as its own run would, whatever shares its pack."""

import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from replikit import models, packed, train


def _data(n=96, d=6, classes=3, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, d, generator=g)
    y = (x[:, 0] > 0).long() + (x[:, 1] > 0.5).long()
    return x, y


def _model(seed):
    torch.manual_seed(seed)
    return models.build("mlp", (6,), 3, width=8, depth=2)


def _stream(seed, n=96, batch=16):
    g = torch.Generator().manual_seed(seed)
    perm, pos = torch.randperm(n, generator=g), 0

    def next_batch():
        nonlocal perm, pos
        if pos + batch > n:
            perm, pos = torch.randperm(n, generator=g), 0
        pos += batch
        return perm[pos - batch : pos]

    return next_batch


def _plain(seed, stream_seed, x, y, epochs, steps, lr, schedule):
    """The loop a member replaces: Adam, cross-entropy, the same schedule."""
    model = _model(seed)
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    batches, total = _stream(stream_seed), epochs * steps
    for t in range(total):
        opt.param_groups[0]["lr"] = lr * schedule(t / total)
        idx = batches()
        loss = F.cross_entropy(model(x[idx]), y[idx])
        opt.zero_grad()
        loss.backward()
        opt.step()
    return model.state_dict()


def test_each_member_trains_like_its_own_run():
    x, y = _data()
    schedule = lambda p: 1.0 - 0.5 * p  # noqa: E731
    states, histories = packed.fit(
        [_model(1), _model(2)],
        [_stream(11), _stream(12)],
        x,
        y,
        epochs=3,
        steps_per_epoch=6,
        width=4,
        lr=0.01,
        lr_schedule=schedule,
        evaluate={"val": (x, y)},
    )
    for state, seed, stream in zip(states, (1, 2), (11, 12)):
        ref = _plain(seed, stream, x, y, 3, 6, 0.01, schedule)
        for k, v in ref.items():
            torch.testing.assert_close(state[k], v, atol=1e-5, rtol=1e-4)
    assert [len(h) for h in histories] == [3, 3]
    assert all(0.0 <= row["val_acc"] <= 1.0 and row["train_loss"] > 0 for h in histories for row in h)
    assert states[0]["features.1.weight"].shape == _model(0).state_dict()["features.1.weight"].shape


def test_a_member_is_bit_identical_whatever_shares_its_pack():
    x, y = _data()
    kw = dict(epochs=2, steps_per_epoch=6, width=4, lr=0.01)
    alone, h_alone = packed.fit([_model(1)], [_stream(11)], x, y, **kw)
    crowd, h_crowd = packed.fit(
        [_model(1), _model(5), _model(6)], [_stream(11), _stream(15), _stream(16)], x, y, **kw
    )
    assert all(torch.equal(alone[0][k], crowd[0][k]) for k in alone[0])
    assert h_alone[0] == h_crowd[0]


def test_what_a_pack_cannot_hold_is_refused():
    x, y = _data()
    drop = nn.Sequential(nn.Linear(6, 4), nn.Dropout(0.2), nn.Linear(4, 3))
    with pytest.raises(ValueError, match="Dropout"):
        packed.fit([drop], [_stream(1)], x, y, epochs=1, steps_per_epoch=1, width=2, lr=0.1)
    with pytest.raises(ValueError, match="3 members for a pack of width 2"):
        packed.fit(
            [_model(i) for i in range(3)],
            [_stream(i) for i in range(3)],
            x,
            y,
            epochs=1,
            steps_per_epoch=1,
            width=2,
            lr=0.1,
        )


def test_a_batch_stream_per_member_is_required():
    x, y = _data()
    with pytest.raises(ValueError, match="2 models but 1 batch streams"):
        packed.fit([_model(1), _model(2)], [_stream(1)], x, y, epochs=1, steps_per_epoch=1, width=4, lr=0.1)


def test_divergence_is_reported():
    x, y = _data()
    with pytest.raises(packed.DivergenceError):
        packed.fit(
            [_model(1)],
            [_stream(1)],
            x * 1e30,
            y,
            epochs=1,
            steps_per_epoch=3,
            width=2,
            lr=1e3,
            optimizer="sgd",
        )


def _bn_model(seed):
    # no bias before the batch norm: its true gradient is zero, so Adam would turn rounding noise into full
    # steps and two summation orders into different biases (the function is the same either way)
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(6, 8, bias=False), nn.BatchNorm1d(8), nn.ReLU(), nn.Linear(8, 3))


def test_batch_norm_members_keep_their_own_statistics_and_evaluate_by_them():
    """Batch norm packs: each member normalises by its own batch and updates its own running statistics
    (its slice of the stacked buffers), and evaluation runs in eval mode, by those statistics, as a plain
    loop that switches modes does; whatever shares its pack."""
    x, y = _data()
    states, histories = packed.fit(
        [_bn_model(1), _bn_model(2)],
        [_stream(11), _stream(12)],
        x,
        y,
        epochs=3,
        steps_per_epoch=6,
        width=4,
        lr=0.01,
        evaluate={"val": (x, y)},
    )
    for state, history, seed, stream in zip(states, histories, (1, 2), (11, 12)):
        model, batches = _bn_model(seed), _stream(stream)
        opt = torch.optim.Adam(model.parameters(), lr=0.01)
        for epoch in range(3):
            model.train()
            for _ in range(6):
                idx = batches()
                loss = F.cross_entropy(model(x[idx]), y[idx])
                opt.zero_grad()
                loss.backward()
                opt.step()
            model.eval()
            with torch.no_grad():
                acc = (model(x).argmax(1) == y).float().mean().item()
            assert history[epoch]["val_acc"] == pytest.approx(acc, abs=1e-6)
        for k, v in model.state_dict().items():
            torch.testing.assert_close(state[k], v, atol=1e-5, rtol=1e-4, msg=k)
        assert int(state["1.num_batches_tracked"]) == 18
    alone, _ = packed.fit([_bn_model(2)], [_stream(12)], x, y, epochs=3, steps_per_epoch=6, width=4, lr=0.01)
    assert all(torch.equal(alone[0][k], states[1][k]) for k in alone[0])


def test_each_member_trains_at_its_own_learning_rate():
    """``lr`` per member: each member's run equals its plain run at its own rate (Adam and SGD with
    momentum and weight decay: their steps are proportional to the rate), and the history says its rate."""
    x, y = _data()
    schedule = lambda p: 1.0 - 0.5 * p  # noqa: E731
    states, histories = packed.fit(
        [_model(1), _model(2), _model(3)],
        [_stream(11), _stream(12), _stream(13)],
        x,
        y,
        epochs=3,
        steps_per_epoch=6,
        width=4,
        lr=[0.01, 0.003, 0.03],
        lr_schedule=schedule,
    )
    for state, seed, stream, lr in zip(states, (1, 2, 3), (11, 12, 13), (0.01, 0.003, 0.03)):
        ref = _plain(seed, stream, x, y, 3, 6, lr, schedule)
        for k, v in ref.items():
            torch.testing.assert_close(state[k], v, atol=1e-5, rtol=1e-4)
    assert [h[0]["lr"] for h in histories] == pytest.approx(
        [0.01 * schedule(5 / 18) * r for r in (1, 0.3, 3)]
    )
    kw = dict(epochs=2, steps_per_epoch=6, width=4, optimizer="sgd", weight_decay=1e-3)
    mixed, _ = packed.fit([_model(1), _model(2)], [_stream(11), _stream(12)], x, y, lr=[0.05, 0.2], **kw)
    own, _ = packed.fit([_model(2)], [_stream(12)], x, y, lr=[0.2], **kw)
    assert all(torch.equal(mixed[1][k], own[0][k]) for k in own[0])  # whatever the pack-mates' rates
    with pytest.raises(ValueError, match="2 members but 3 learning rates"):
        packed.fit([_model(1), _model(2)], [_stream(1), _stream(2)], x, y, lr=[0.1] * 3, **kw)


def test_a_diverged_member_is_recorded_and_the_others_train_on():
    """``divergence='record'``: the member whose loss is not finite stops its history at that epoch; the
    others' numbers are those they have in a pack without it (members share nothing)."""
    x, y = _data()
    kw = dict(epochs=3, steps_per_epoch=6, width=4, optimizer="sgd", momentum=0.0)
    mixed, h = packed.fit(
        [_model(1), _model(2)], [_stream(11), _stream(12)], x, y, lr=[0.05, 1e9], divergence="record", **kw
    )
    calm, h_calm = packed.fit([_model(1)], [_stream(11)], x, y, lr=0.05, **kw)
    assert len(h[1]) < 3 and not math.isfinite(h[1][-1]["train_loss"])
    assert len(h[0]) == 3 and all(math.isfinite(r["train_loss"]) for r in h[0])
    for k in calm[0]:
        torch.testing.assert_close(mixed[0][k], calm[0][k], atol=1e-6, rtol=1e-5)
    with pytest.raises(packed.DivergenceError):
        packed.fit([_model(1), _model(2)], [_stream(11), _stream(12)], x, y, lr=[0.05, 1e9], **kw)


def test_packed_data_diet_benchmark_quick(tmp_path):
    import json
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
    import packed_data_diet

    out = tmp_path / "p.json"
    assert packed_data_diet.main(["--device", "cpu", "--quick", "--width", "16", "--out", str(out)]) == 0
    res = json.loads(out.read_text())
    assert [r["variant"] for r in res["rows"]] == ["pack 16", "one at a time"]
    assert res["rows"][0]["runs"] == 2 * res["rows"][1]["runs"] > 0
    assert res["max_abs_diff_arm_mean_acc"] < 0.05
    # the report's figures are those of its rows (no timing asserted: only how the speed-up is formed)
    assert res["packed_arm_means"].keys() == res["unpacked_arm_means"].keys()
    assert all(r["s_per_run"] == pytest.approx(r["seconds"] / r["runs"]) for r in res["rows"])
    assert res["speedup"] == pytest.approx(res["rows"][1]["s_per_run"] / res["rows"][0]["s_per_run"])


def test_subset_batches_cover_the_subset_once_per_pass():
    subset = torch.tensor([2, 3, 5, 7, 11, 13, 17])
    batches = packed.Batches(subset, batch_size=3, seed=0)
    first_pass = torch.cat([batches.next(), batches.next()])  # 6 of 7; the ragged tail is dropped
    assert len(set(first_pass.tolist())) == 6 and set(first_pass.tolist()) <= set(subset.tolist())
    assert set(batches.next().tolist()) <= set(subset.tolist())  # a fresh pass
    small = packed.Batches(subset, batch_size=8, seed=0)  # smaller than a batch: all of it each pass
    assert sorted(small.next().tolist()) == sorted(small.next().tolist()) == subset.tolist()
    with pytest.raises(ValueError, match="no examples"):
        packed.Batches(subset[:0], batch_size=8, seed=0)


def test_batches_of_the_whole_set_are_the_stream_train_fit_draws():
    n, seed = 50, 7
    seen = []
    w = torch.zeros(1, requires_grad=True)

    def step(idx, p):
        seen.append(idx.clone())
        return (w * 0).sum()

    for batch in (8, 64):  # a set smaller than one batch: one batch of all of it per epoch, as train.fit
        seen.clear()
        train.fit(step, [w], n, epochs=3, batch_size=batch, seed=seed, device=torch.device("cpu"))
        stream = packed.Batches(torch.arange(n), batch, seed)
        assert all(torch.equal(s, stream.next()) for s in seen) and len(seen) == 3 * max(1, n // batch)


def test_pack_auto_packs_on_cuda_only_and_only_what_can_be_packed(monkeypatch):
    """``pack: auto`` (the default): 16 on CUDA, 0 on the CPU (so the CPU's numbers stay those of runs one at
    a time), 0 for a batch-norm model; a number is kept as given, and a typo is named."""
    import pydantic

    from replikit.methods import data_diet, elr

    assert packed.resolve_width("auto", "cpu") == 0
    assert packed.resolve_width("auto", "cuda:1") == packed.AUTO_WIDTH == 16
    assert packed.resolve_width("auto", "cuda", packable=False) == 0
    assert packed.resolve_width(4, "cuda") == 4
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert packed.resolve_width("auto", "auto") == 16
    assert elr.Config().pack == data_diet.Config().pack == 16
    assert elr.Config(device="cpu").pack == data_diet.Config(device="cpu").pack == 0
    assert elr.Config(dataset="cifar10", model="resnet18").pack == 0
    assert data_diet.Config(dataset="cifar10", model="resnet18", crop_flip=True).pack == 0
    assert elr.Config(pack=0).pack == 0 and elr.Config().model_dump()["pack"] == 16  # what ran is recorded
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert elr.Config().pack == data_diet.Config().pack == 0
    with pytest.raises(pydantic.ValidationError, match="neither a width"):
        elr.Config(pack="atuo")


def test_chunks_group_in_order_and_cut_each_group_to_the_width():
    items = [("a", 1), ("b", 2), ("a", 3), ("a", 4), ("b", 5)]
    assert packed.chunks(items, 2, key=lambda t: t[0]) == [
        ("a", [("a", 1), ("a", 3)]),
        ("a", [("a", 4)]),
        ("b", [("b", 2), ("b", 5)]),
    ]
    assert packed.chunks([1, 2, 3], 2) == [(None, [1, 2]), (None, [3])]


def test_cross_entropy_is_each_slots_own_mean():
    logits, labels = torch.randn(3, 5, 4), torch.randint(4, (3, 5))
    want = torch.stack([F.cross_entropy(logits[i], labels[i]) for i in range(3)])
    torch.testing.assert_close(packed.cross_entropy(logits, labels), want)
    logits, labels = torch.randn(3, 5, 4, 7), torch.randint(4, (3, 5, 7))  # a class per position
    want = torch.stack([F.cross_entropy(logits[i], labels[i]) for i in range(3)])
    torch.testing.assert_close(packed.cross_entropy(logits, labels), want)


@pytest.mark.parametrize("autocast", [False, True])
def test_the_packs_one_cross_entropy_trains_as_a_vmapped_one_bit_for_bit(autocast):
    """packed.fit's default loss is one F.cross_entropy over the flattened pack; a member's numbers are
    those of a vmapped F.cross_entropy per member (what it replaced), bit for bit on the CPU."""
    x, y = _data()
    kw = dict(epochs=2, steps_per_epoch=6, width=4, lr=0.01)

    def vmapped(out, yb, idx, params):
        return torch.func.vmap(lambda o, t: F.cross_entropy(o.float(), t))(out, yb)

    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
        one, h_one = packed.fit([_model(1), _model(2)], [_stream(11), _stream(12)], x, y, **kw)
        ref, h_ref = packed.fit([_model(1), _model(2)], [_stream(11), _stream(12)], x, y, loss=vmapped, **kw)
    assert all(torch.equal(a[k], b[k]) for a, b in zip(one, ref) for k in a)
    assert h_one == h_ref


def test_best_returns_each_members_epoch_of_lowest_held_out_loss():
    """``best``: member m's returned state is the one it had after its best epoch (0: before training),
    bit for bit the state of the same pack trained for that many epochs; ``best_epoch`` in its history."""
    x, y = _data()
    xv, yv = _data(n=48, seed=9)
    yv = (yv + 1) % 3  # a held-out set the training set misleads: its loss turns up, at its own epoch
    seeds, streams = (1, 2, 3), (11, 12, 13)
    seen = []

    def on_epoch(epoch, predict):
        out = predict(xv)
        seen.append(epoch)
        return [{"val_ce": F.cross_entropy(out[m], yv).item()} for m in range(len(seeds))]

    def trained(epochs, **kw):
        members = [_model(s) for s in seeds]
        streams_ = [packed.Batches(torch.arange(96), 16, s).next for s in streams]
        return packed.fit(members, streams_, x, y, epochs=epochs, steps_per_epoch=6, width=4, lr=0.05, **kw)

    states, histories = trained(6, on_epoch=on_epoch, best="val_ce")
    assert seen == list(range(7))  # epoch 0 (before training) too
    best = [h[-1]["best_epoch"] for h in histories]
    for m, h in enumerate(histories):
        losses = [row["val_ce"] for row in h]
        assert [row["best_epoch"] for row in h] == [
            0 if min(losses[: e + 1]) >= initial_loss(m, xv, yv) else 1 + losses.index(min(losses[: e + 1]))
            for e in range(len(h))
        ]
    assert len(set(best)) > 1 and min(best) < 6  # early stopping did something, not the same for all
    for m, e in enumerate(best):
        ref = {k: v for k, v in _model(seeds[m]).state_dict().items()} if e == 0 else trained(e)[0][m]
        assert all(torch.equal(states[m][k], ref[k]) for k in ref), (m, e)
    with pytest.raises(ValueError, match="needs the on_epoch"):
        trained(1, best="val_ce")


def initial_loss(m, xv, yv):
    return F.cross_entropy(train.predict(_model((1, 2, 3)[m]), xv), yv).item()


def test_best_keeps_the_earlier_epoch_on_ties():
    """``best`` with a value that never improves: every member keeps epoch 0 (ties keep the earlier epoch),
    its state before training, and each history row says so."""
    x, y = _data()
    states, histories = packed.fit(
        [_model(1), _model(2)],
        [_stream(11), _stream(12)],
        x,
        y,
        epochs=3,
        steps_per_epoch=6,
        width=4,
        lr=0.05,
        on_epoch=lambda epoch, predict: [{"flat": 1.0}, {"flat": 1.0}],
        best="flat",
    )
    assert [[row["best_epoch"] for row in h] for h in histories] == [[0, 0, 0], [0, 0, 0]]
    for state, seed in zip(states, (1, 2)):
        assert all(torch.equal(state[k], v) for k, v in _model(seed).state_dict().items())
