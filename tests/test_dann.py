"""DANN: the gradient reversal layer, the paper's schedules, the loss, the shift, the config."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from replikit import models
from replikit.config import ConfigError
from replikit.data.shifts import clutter_shift, rotate_2d, smooth_background
from replikit.methods import dann, load_config

# ------------------------------------------------------------------ gradient reversal layer


def test_grl_is_identity_forward_and_flips_and_scales_the_gradient():
    x = torch.tensor([1.0, -2.0, 3.0], requires_grad=True)
    w = torch.tensor([0.5, 2.0, -1.0])
    y = dann.grad_reverse(x, 0.7)
    assert torch.equal(y, x)
    (y * w).sum().backward()
    # d/dx sum(w * x) = w; through the GRL: -0.7 * w
    assert torch.allclose(x.grad, torch.tensor([-0.35, -1.4, 0.7]))


def test_grl_inside_a_network_negates_autograd_gradient():
    torch.manual_seed(0)
    lin, head = torch.nn.Linear(4, 3), torch.nn.Linear(3, 1)
    x = torch.randn(5, 4)
    head(lin(x)).pow(2).sum().backward()
    plain = lin.weight.grad.clone()
    lin.zero_grad()
    head(dann.grad_reverse(lin(x), 2.5)).pow(2).sum().backward()
    assert torch.allclose(lin.weight.grad, -2.5 * plain, atol=1e-6)


def test_grl_with_zero_factor_blocks_the_gradient():
    x = torch.ones(3, requires_grad=True)
    (dann.grad_reverse(x, 0.0) * 4).sum().backward()
    assert torch.equal(x.grad, torch.zeros(3))


# ------------------------------------------------------------------ schedules


def test_adaptation_factor_at_start_and_end():
    assert dann.adaptation_factor(0.0) == 0.0
    assert dann.adaptation_factor(1.0) == pytest.approx(2 / (1 + math.exp(-10)) - 1)
    assert dann.adaptation_factor(1.0) == pytest.approx(0.9999092, abs=1e-7)
    assert dann.adaptation_factor(0.5, gamma=1.0) == pytest.approx(2 / (1 + math.exp(-0.5)) - 1)


def test_annealed_learning_rate_at_start_and_end():
    assert dann.annealed_lr(0.0) == 1.0
    assert dann.annealed_lr(1.0) == pytest.approx(11**-0.75)
    assert dann.annealed_lr(1.0) == pytest.approx(0.16556, abs=1e-5)


# ------------------------------------------------------------------ losses


def test_domain_loss_hand_value():
    # logits 0: each BCE is log 2; the loss sums the source and target means
    assert dann.domain_loss(torch.zeros(4), torch.zeros(6)).item() == pytest.approx(2 * math.log(2))
    # confident and right -> near 0; confident and wrong -> large
    assert dann.domain_loss(torch.full((3,), -20.0), torch.full((3,), 20.0)).item() < 1e-6
    assert dann.domain_loss(torch.full((3,), 20.0), torch.full((3,), -20.0)).item() > 39


def _tiny(seed=0):
    torch.manual_seed(seed)
    model = models.build("mlp", (6,), 3, width=5, depth=1)
    return model, dann.domain_classifier(model.feature_dim, 4)


def test_source_only_features_get_no_gradient_from_the_domain_loss():
    torch.manual_seed(1)
    xs, ys, xt = torch.randn(8, 6), torch.randint(3, (8,)), torch.randn(8, 6) + 2
    model, domain = _tiny()
    loss, _ = dann.dann_loss(model, domain, xs, ys, xt, coef=0.0)
    loss.backward()
    feat_grad = [p.grad.clone() for p in model.parameters()]
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in domain.parameters())  # the probe trains
    model2, _ = _tiny()
    torch.nn.functional.cross_entropy(model2(xs), ys).backward()
    for a, p in zip(feat_grad, model2.parameters()):
        assert torch.allclose(a, p.grad, atol=1e-6)


def test_dann_feature_gradient_is_ce_minus_coef_times_domain_gradient():
    torch.manual_seed(2)
    xs, ys, xt = torch.randn(8, 6), torch.randint(3, (8,)), torch.randn(8, 6) + 1
    coef = 0.6
    model, domain = _tiny()
    loss, logs = dann.dann_loss(model, domain, xs, ys, xt, coef=coef)
    loss.backward()
    got = model.features[1].weight.grad.clone()
    # by hand: gradient of CE plus -coef times the gradient of L_d, both through the features
    m2, d2 = _tiny()
    f = m2.features(torch.cat([xs, xt]))
    ce = torch.nn.functional.cross_entropy(m2.head(f[:8]), ys)
    d = d2(f).squeeze(1)
    ld = dann.domain_loss(d[:8], d[8:])
    g_ce = torch.autograd.grad(ce, m2.features[1].weight, retain_graph=True)[0]
    g_d = torch.autograd.grad(ld, m2.features[1].weight)[0]
    assert torch.allclose(got, g_ce - coef * g_d, atol=1e-6)
    assert 0.0 <= logs["domain_acc_train"].item() <= 1.0


# ------------------------------------------------------------------ shifts


def test_clutter_shift_is_deterministic_and_changes_the_data():
    x = np.random.default_rng(0).standard_normal((50, 40)).astype(np.float32)
    before = x.copy()
    a = clutter_shift(x, seed=3, strength=1.0)
    assert np.array_equal(a, clutter_shift(x, seed=3, strength=1.0))
    assert not np.allclose(a, clutter_shift(x, seed=4, strength=1.0))
    assert not np.allclose(a, x)
    assert np.array_equal(x, before)  # input untouched
    assert a.dtype == x.dtype and a.shape == x.shape


def test_clutter_shift_strength_and_amplitude_by_hand():
    x = np.random.default_rng(1).standard_normal((200, 40))
    assert np.allclose(clutter_shift(x, seed=0, strength=0.0, amplitude=1.0), x)
    assert np.allclose(clutter_shift(x, seed=0, strength=0.0, amplitude=0.5), 0.5 * x)
    bg = clutter_shift(x, seed=0, strength=2.0) - x
    # background RMS per signal = strength * std(x)
    assert np.allclose(np.sqrt((bg**2).mean(1)), 2.0 * x.std(), rtol=1e-6)
    with pytest.raises(ValueError):
        clutter_shift(x, seed=0, strength=-1.0)
    with pytest.raises(ValueError):
        clutter_shift(x[0], seed=0)


def test_smooth_background_is_smooth_and_unit_rms():
    b = smooth_background(20, 40, seed=0, n_waves=3, max_cycles=2.0)
    assert np.allclose((b**2).mean(1), 1.0)
    # at most 2 cycles per 40 samples: neighbouring samples differ by at most 2*pi*2/40 * peak amplitude
    assert np.abs(np.diff(b, axis=1)).max() < np.abs(b).max()


def test_rotate_2d_by_hand():
    pts = np.array([[1.0, 0.0], [0.0, 2.0]])
    assert np.allclose(rotate_2d(pts, 90, center=np.zeros(2)), [[0.0, 1.0], [-2.0, 0.0]])
    assert np.allclose(rotate_2d(pts, 0), pts)
    assert np.allclose(rotate_2d(pts, 35).mean(0), pts.mean(0))  # about the mean by default


# ------------------------------------------------------------------ config


@pytest.mark.parametrize("profile", ["smoke", "default", "full"])
def test_every_profile_validates(profile):
    cfg = load_config("dann", profile=profile)
    assert cfg.profile == profile
    if profile == "full":
        assert cfg.task == "svhn_mnist" and cfg.model == "cnn2d"


@pytest.mark.parametrize(
    "overrides, fragment",
    [
        ({"adv_wieght": 1.0}, "unknown key"),
        ({"adv_weight": -1.0}, "adv_weight"),
        ({"shift_strength": 50.0}, "shift_strength"),
        ({"model": "resnet99"}, "model"),
        ({"task": "svhn_mnist", "model": "cnn1d"}, "images"),
        ({"model": "cnn2d"}, "1-D"),
        ({"lambda": 1.0}, "unknown key"),
        ({"moons_seeds": 5}, "unknown key"),  # the toy runs with the main task's seeds
    ],
)
def test_config_errors(overrides, fragment):
    with pytest.raises(ConfigError, match=fragment):
        load_config("dann", profile="default", overrides=overrides)


# ------------------------------------------------------------------ data and pairing


def test_task_splits_are_disjoint_and_target_is_shifted():
    cfg = load_config("dann", profile="default")
    t = dann.make_task(cfg)
    assert len(t["xs"]) + len(t["xs_val"]) + len(t["xt"]) == 8000
    src = {row.tobytes() for row in np.concatenate([t["xs"], t["xs_val"]])}
    assert not any(row.tobytes() in src for row in t["xt"])
    assert t["xt_test"].shape == t["xs_test"].shape and not np.allclose(t["xt_test"], t["xs_test"])
    assert np.array_equal(t["yt_test"], t["ys_test"])


def test_moons_target_is_rotated_fresh_sample():
    cfg = load_config("dann", profile="smoke")
    d = dann.make_moons_task(cfg, 0)
    assert d["xs"].shape == d["xt"].shape == (cfg.moons_n, 2)
    assert not np.allclose(d["xt"], rotate_2d(d["xs"], cfg.moons_angle))


def test_moons_claim_arm_is_the_papers_logistic_dann_paired_with_source_only():
    claim = {c.id: c for c in dann.CLAIMS}["dann.moons_target_gain"]
    assert (claim.treatment, claim.baseline) == ("moons_dann", "moons_source_only")
    assert claim.quote_kind == "paraphrase" and claim.delta > 0
    assert isinstance(dann.domain_classifier(15, 0), torch.nn.Linear)  # hidden = 0: logistic regression
    small = {"moons_epochs": 2, "moons_n": 40, "moons_adv_weight": 0.0}
    cfg = load_config("dann", profile="smoke", overrides=small)
    out = {a: dann.run_moons(cfg.model_dump(), a, 0) for a in dann.MOONS_ARMS}
    # with no adversarial weight every toy arm is the same network, trained on the same batches
    assert out["moons_dann"]["moons_target_acc"] == out["moons_source_only"]["moons_target_acc"]
    assert out["moons_dann_mlp"]["moons_target_acc"] == out["moons_source_only"]["moons_target_acc"]


def test_zero_adv_weight_dann_arm_equals_source_only_exactly():
    cfg = load_config(
        "dann",
        profile="smoke",
        overrides={"n_seeds": 1, "epochs": 1, "train_subset": 256, "val_size": 50, "adv_weight": 0.0},
    ).model_dump()
    a, b = dann.run_one(cfg, "source_only", 0), dann.run_one(cfg, "dann", 0)
    for key in ("target_acc", "source_acc", "domain_acc"):
        assert a[key] == b[key]
    cfg["adv_weight"] = 1.0
    c = dann.run_one(cfg, "dann", 0)
    assert c["history"][-1]["train_loss"] != a["history"][-1]["train_loss"]


def test_full_profile_wiring_runs_on_fake_svhn_and_mnist(monkeypatch):
    """The SVHN -> MNIST path (cnn2d, batch norm, 32x32 RGB target) end to end on random images."""
    from replikit.data import Dataset

    rng = np.random.default_rng(0)

    def fake(name, **_):
        shape = (3, 32, 32) if name == "svhn" else (1, 28, 28)
        return Dataset(
            name,
            rng.random((96, *shape), dtype=np.float32),
            rng.integers(0, 10, 96),
            rng.random((40, *shape), dtype=np.float32),
            rng.integers(0, 10, 40),
            n_classes=10,
        )

    monkeypatch.setattr(dann.data, "load", fake)
    cfg = load_config(
        "dann",
        profile="full",
        overrides={
            "width": 4,
            "domain_hidden": 8,
            "epochs": 1,
            "batch_size": 16,
            "val_size": 16,
            "device": "cpu",
        },
    )
    t = dann.make_task(cfg)
    assert t["xs"].shape == (80, 3, 32, 32) and t["xs_val"].shape == (16, 3, 32, 32)
    assert t["xt"].shape == (96, 3, 32, 32) and t["xt_test"].shape == (40, 3, 32, 32)
    for arm in dann.ARMS:
        r = dann.run_one(cfg.model_dump(), arm, 0)
        assert 0.0 <= r["target_acc"] <= 1.0 and len(r["history"]) == 1


def test_packed_runs_give_the_rows_of_the_runs_one_by_one():
    """pack > 0: both arms of every seed in one vmapped model (per-slot gradient reversal, each member's
    own init, batches and target draws) give run_one's rows and histories to float tolerance; what else
    shares a pack changes nothing."""
    from replikit.methods import load_config

    cfg = load_config("dann", profile="smoke", overrides={"moons": False, "epochs": 8, "workers": 1})
    plain = dann.run(cfg.model_copy(update={"pack": 0}))
    packed = dann.run(cfg.model_copy(update={"pack": 16}))
    assert list(packed.runs["arm"]) == list(plain.runs["arm"]) and list(packed.runs.columns) == list(
        plain.runs.columns
    )
    numbers = ["target_acc", "source_acc", "domain_acc", "source_val_acc", "target_train_acc"]
    np.testing.assert_allclose(packed.runs[numbers], plain.runs[numbers], atol=0.005)
    assert plain.runs["source_acc"].min() > 0.2  # trained past chance (0.1): a comparison that can fail
    assert list(packed.history.columns) == list(plain.history.columns)
    for col in ("train_loss", "domain_loss", "lr"):
        np.testing.assert_allclose(packed.history[col], plain.history[col], rtol=1e-3)
    args = cfg.model_copy(update={"pack": 16}).model_dump()
    alone = dann.run_pack(args, [("dann", 1)])[0]
    crowd = dann.run_pack(args, [("source_only", 0), ("dann", 0), ("dann", 1)])[2]
    assert alone["history"] == crowd["history"]
