"""ELR's math on hand-made tensors, and its label noise."""

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from replikit.data.noise import symmetric_noise
from replikit.methods.elr import elr_loss, elr_regularizer, update_targets


def test_target_update_is_the_temporal_ensemble():
    targets = torch.tensor([[0.5, 0.5], [1.0, 0.0], [0.0, 1.0]])
    probs = torch.tensor([[0.9, 0.1], [0.2, 0.8]])
    update_targets(targets, torch.tensor([0, 2]), probs, beta=0.7)
    assert torch.allclose(targets[0], torch.tensor([0.7 * 0.5 + 0.3 * 0.9, 0.7 * 0.5 + 0.3 * 0.1]))
    assert torch.allclose(targets[1], torch.tensor([1.0, 0.0]))  # not in the batch: untouched
    assert torch.allclose(targets[2], torch.tensor([0.3 * 0.2, 0.7 + 0.3 * 0.8]))


def test_regularizer_value_and_gradient_direction():
    probs = torch.tensor([[0.6, 0.4]], requires_grad=True)
    t = torch.tensor([[0.9, 0.1]])
    reg = elr_regularizer(probs, t)
    assert reg.item() == pytest.approx(math.log(1 - (0.6 * 0.9 + 0.4 * 0.1)))
    reg.backward()
    # d/dp log(1 - <p,t>) = -t / (1 - <p,t>): descending it raises p where the target is large
    assert torch.allclose(probs.grad, -t / (1 - 0.58))


def test_weight_zero_is_plain_cross_entropy_and_leaves_targets():
    logits, labels = torch.randn(4, 3), torch.tensor([0, 1, 2, 0])
    targets = torch.zeros(4, 3)
    loss = elr_loss(logits, labels, targets, torch.arange(4), beta=0.7, weight=0.0)
    assert loss.item() == pytest.approx(F.cross_entropy(logits, labels).item())
    assert targets.abs().sum() == 0
    loss = elr_loss(logits, labels, targets, torch.arange(4), beta=0.7, weight=3.0)
    assert loss.item() < F.cross_entropy(logits, labels).item()  # log(1 - <p,t>) < 0
    assert torch.allclose(targets.sum(1), torch.full((4,), 0.3))


def test_symmetric_noise_redraws_from_all_classes():
    y = np.repeat(np.arange(10), 2000)
    noisy = symmetric_noise(y, 0.4, 10, seed=0)
    wrong = (noisy != y).mean()
    assert wrong == pytest.approx(0.4 * 9 / 10, abs=0.01)  # the true class can be redrawn
    assert np.array_equal(noisy, symmetric_noise(y, 0.4, 10, seed=0))
    assert np.array_equal(symmetric_noise(y, 0.0, 10, seed=0), y)
    with pytest.raises(ValueError):
        symmetric_noise(y, 1.2, 10, seed=0)


def test_packed_loss_is_the_loss_of_each_slot():
    from replikit.methods.elr import elr_loss_packed

    g = torch.Generator().manual_seed(0)
    w, b, n, c = 3, 5, 12, 4
    logits = torch.randn(w, b, c, generator=g)
    labels = torch.randint(c, (w, b), generator=g)
    idx = torch.stack([torch.randperm(n, generator=g)[:b] for _ in range(w)])
    targets = torch.rand(w, n, c, generator=g)
    weights = torch.tensor([3.0, 0.0, 1.5])
    per_slot = [targets[i].clone() for i in range(w)]
    got = elr_loss_packed(logits, labels, targets, idx, 0.7, weights)
    for i in range(w):
        ref = elr_loss(logits[i], labels[i], per_slot[i], idx[i], 0.7, weights[i].item())
        torch.testing.assert_close(got[i], ref)
        if weights[i] > 0:  # the plain-CE slot's targets are updated too, and never read
            torch.testing.assert_close(targets[i], per_slot[i])


def _history(rows):
    return np.array([[r["train_loss"], r["test_acc"], r["memorized"]] for r in rows], dtype=float)


@pytest.fixture(scope="module")
def smoke_cfg():
    from replikit.methods import load_config

    return load_config("elr", profile="smoke", overrides={"pack": 4, "epochs": 3}).model_dump()


def test_a_packed_run_trains_like_its_own_run(smoke_cfg):
    from replikit.methods import elr

    torch.set_num_threads(1)
    members = [("ce", 0, 0.4), ("elr", 0, 0.4), ("elr", 1, 0.0)]
    for (arm, rep, rate), row in zip(members, elr.run_pack(smoke_cfg, members)):
        ref = elr.run_one(smoke_cfg, arm, rep, rate)
        assert (row["arm"], row["seed"], row["noise_rate"]) == (arm, rep, rate)
        np.testing.assert_allclose(_history(row["history"]), _history(ref["history"]), atol=1e-4)
        assert math.isnan(row["memorized"]) == (rate == 0.0)


def test_a_packed_run_is_bit_identical_whatever_shares_its_pack(smoke_cfg):
    from replikit.methods import elr

    alone = elr.run_pack(smoke_cfg, [("elr", 0, 0.4)])[0]
    third = elr.run_pack(smoke_cfg, [("ce", 1, 0.4), ("elr", 1, 0.0), ("elr", 0, 0.4)])[2]
    np.testing.assert_array_equal(_history(alone["history"]), _history(third["history"]))  # NaN == NaN here


def test_pack_refuses_resnets():
    from replikit.methods import load_config

    with pytest.raises(ValueError, match="fills a GPU on its own"):
        load_config("elr", profile="full", overrides={"pack": 8})


def test_run_with_packs_gives_the_rows_of_the_runs_one_by_one(smoke_cfg):
    from replikit.methods import elr

    packed_out = elr.run(elr.Config(**dict(smoke_cfg, workers=1)))
    plain_out = elr.run(elr.Config(**dict(smoke_cfg, workers=1, pack=0)))
    cols = ["arm", "seed"]
    assert packed_out.runs[cols].equals(plain_out.runs[cols])
    np.testing.assert_allclose(packed_out.runs["final_test_acc"], plain_out.runs["final_test_acc"], atol=1e-4)
    assert len(packed_out.extras["sweep"]) == len(plain_out.extras["sweep"])
