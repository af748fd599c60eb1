"""Grokking's math on hand-made curves and tensors, and a smoke run of both tasks."""

import math

import numpy as np
import pandas as pd
import pytest
import torch

from replikit.methods import grokking as g


def test_crossing_time_interpolates_in_log_step_and_log_loss():
    steps = np.array([0, 1, 10, 100, 1000])
    loss = np.array([1.0, 1.0, 0.8, 0.2, 0.1])
    # level 0.4: between step 10 (0.8) and 100 (0.2), half way in log loss -> half way in log step
    assert g.crossing_time(steps, loss, 0.4) == pytest.approx(10**1.5)
    assert g.crossing_time(steps, loss, 0.2) == pytest.approx(100.0)
    assert math.isnan(g.crossing_time(steps, loss, 0.05))  # never reached
    assert g.crossing_time(steps, np.array([1.0, 0.1, 0.1, 0.1, 0.1]), 0.5) == 1.0  # at the first step


def test_delay_observed_censored_and_untrained():
    steps = np.array([0, 1, 10, 100, 1000])
    train = np.array([1.0, 0.9, 0.1, 0.01, 0.001])
    test = np.array([1.0, 1.0, 1.0, 0.4, 0.1])
    m = g.delay(steps, train, test, 0.5)
    assert not m["censored"] and not m["untrained"]
    assert m["delay"] == pytest.approx(math.log10(m["t_test"] / m["t_train"]))
    assert 0 < m["delay"] < 2
    stuck = np.array([1.0, 1.0, 0.9, 0.8, 0.7])
    c = g.delay(steps, train, stuck, 0.5)  # the test loss never halves: censored at its lower bound
    assert c["censored"] and math.isnan(c["t_test"])
    assert c["delay"] == pytest.approx(math.log10(1000 / c["t_train"]))
    u = g.delay(steps, stuck, stuck, 0.5)
    assert u["untrained"] and math.isnan(u["delay"])


def test_censored_difference_takes_the_value_nearest_zero():
    assert g.censored_difference(0.2, False, 0.5, False) == pytest.approx(0.3)
    # y censored at 0.5 (y >= 0.5): y - x >= 0.3, the surely-there effect
    assert g.censored_difference(0.2, False, 0.5, True) == pytest.approx(0.3)
    # x censored at 0.2 (x >= 0.2) and y = 0.5: y - x in (-inf, 0.3]: undecidable -> 0
    assert g.censored_difference(0.2, True, 0.5, False) == 0.0
    # x censored at 0.6, y = 0.5: y - x <= -0.1 surely
    assert g.censored_difference(0.6, True, 0.5, False) == pytest.approx(-0.1)
    assert g.censored_difference(0.2, True, 0.5, True) == 0.0
    assert g.censored_difference(math.nan, False, 0.5, False) == 0.0


def test_censored_kendall():
    order = np.array([4.0, 1.0, 2.0, 3.0])
    assert g.censored_kendall(order, np.array([0.9, 0.1, 0.2, 0.4]), np.zeros(4, bool)) == 1.0
    assert g.censored_kendall(order, -np.array([0.9, 0.1, 0.2, 0.4]), np.zeros(4, bool)) == -1.0
    # the two laziest censored at bounds above every observed delay: 5 pairs decided, their own pair not
    v, c = np.array([0.1, 0.2, 0.8, 0.7]), np.array([False, False, True, True])
    assert g.censored_kendall(np.arange(4.0), v, c) == pytest.approx(5 / 6)


def test_output_is_centred_at_init_and_scaled_by_alpha():
    gen = torch.Generator().manual_seed(0)
    W, a, x = (
        torch.randn(3, 5, 7, generator=gen),
        torch.randn(3, 5, 2, generator=gen),
        torch.randn(11, 7, generator=gen),
    )
    alphas = torch.tensor([0.1, 1.0, 10.0])
    h0 = g.raw_output(W, a, x, 0.5)
    assert g.centred_output(W, a, x, h0, alphas, 0.5).abs().max() == 0
    W2 = W + 0.01 * torch.randn(W.shape, generator=gen)
    f = g.centred_output(W2, a, x, h0, alphas, 0.5)
    assert torch.allclose(f[2], 10 * (g.raw_output(W2, a, x, 0.5)[2] - h0[2]), atol=1e-6)


def test_gd_step_matches_autograd_with_eta0_over_alpha_squared():
    gen = torch.Generator().manual_seed(1)
    W, a = (
        torch.randn(2, 4, 6, generator=gen, dtype=torch.float64),
        torch.randn(2, 4, 3, generator=gen, dtype=torch.float64),
    )
    x, y = (
        torch.randn(9, 6, generator=gen, dtype=torch.float64),
        torch.randn(9, 3, generator=gen, dtype=torch.float64),
    )
    alphas = torch.tensor([0.5, 2.0], dtype=torch.float64)
    h0 = g.raw_output(W, a, x, 0.7)
    Wg, ag = W.clone().requires_grad_(), a.clone().requires_grad_()
    W2 = W + 0.1 * torch.randn(W.shape, generator=gen, dtype=torch.float64)
    Wg = W2.clone().requires_grad_()
    loss = 0.5 * ((g.centred_output(Wg, ag, x, h0, alphas, 0.7) - y) ** 2).mean(dim=(1, 2))
    loss.sum().backward()
    W_new, a_new = W2.clone(), a.clone()
    returned = g.gd_step(W_new, a_new, x, y, h0, alphas, 0.7, eta0=0.3)
    assert torch.allclose(returned, loss.detach())
    lr = 0.3 / alphas**2
    assert torch.allclose(W_new, W2 - lr[:, None, None] * Wg.grad)
    assert torch.allclose(a_new, a - lr[:, None, None] * ag.grad)


def test_aligned_target_has_unit_variance_and_linear_share_rho_squared():
    z = torch.randn(400_000, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    for rho in (0.0, 0.6):
        y = g.aligned_target(z, rho)
        assert y.var().item() == pytest.approx(1.0, abs=0.02)
        assert (y * z).mean().item() == pytest.approx(rho, abs=0.01)  # linear share: corr(y, z)^2 = rho^2
    assert torch.equal(g.aligned_target(z, 0.0), (z**2 - 1) / math.sqrt(2))


def test_aligned_target_is_better_aligned_with_the_initial_kernel():
    """Kernel-target alignment y'Ky / (|K|_F |y|^2) of the initial NTK grows with rho."""
    cfg = g.Config(seed="pilot:0", dim=30, n_train=200, n_test=8, width=64)
    gen = torch.Generator().manual_seed(0)
    W, a = (
        torch.randn(1, 64, 30, generator=gen, dtype=torch.float64),
        torch.randn(1, 64, 1, generator=gen, dtype=torch.float64),
    )

    def ntk_alignment(rho):
        d = g.make_polynomial(cfg, 0, rho)
        x, y = d["x_train"].double(), d["y_train"][:, 0].double()
        Wr = W.clone().requires_grad_()
        ar = a.clone().requires_grad_()
        jac = []
        for i in range(len(x)):
            out = g.raw_output(Wr, ar, x[i : i + 1], cfg.quad).sum()
            gw, ga = torch.autograd.grad(out, (Wr, ar))
            jac.append(torch.cat([gw.flatten(), ga.flatten()]))
        J = torch.stack(jac)
        K = J @ J.T
        return (y @ K @ y / (K.norm() * (y @ y))).item()

    assert ntk_alignment(0.6) > 1.5 * ntk_alignment(0.0)


def test_statistics_on_a_hand_made_runs_table():
    rows = []
    for seed in (0, 1):
        for alpha, dly, cens in ((0.1, 0.05, False), (1.0, 0.3, False), (10.0, 0.9, True)):
            rows.append(
                {
                    "arm": g.arm_name(alpha),
                    "seed": seed,
                    "group": "sweep",
                    "alpha": alpha,
                    "rho": 0.0,
                    "delay": dly,
                    "censored": cens,
                }
            )
        rows.append(
            {
                "arm": g.arm_name(1.0, 0.6),
                "seed": seed,
                "group": "aligned",
                "alpha": 1.0,
                "rho": 0.6,
                "delay": 0.1,
                "censored": False,
            }
        )
    runs = pd.DataFrame(rows)
    assert g.delay_trend(runs).tolist() == [1.0, 1.0]
    assert g.richest_delay(runs).tolist() == pytest.approx([-0.05, -0.05])
    assert g.alignment_gain(runs).tolist() == pytest.approx([0.2, 0.2])
    no_aligned = runs[runs["rho"] == 0]
    assert g.alignment_gain(no_aligned).empty  # the judge then records the claim as skipped
    assert g.delay_trend(no_aligned[no_aligned["alpha"] < 5]).empty  # two alphas: no trend to measure


def test_config_rejects_an_unpaired_aligned_arm():
    with pytest.raises(ValueError):
        g.Config(alphas=[0.5, 2.0], align_alpha=1.0)
    assert g.Config(alphas=[0.5, 2.0], align_rho=0.0, align_alpha=1.0).alphas == [0.5, 2.0]


def test_smoke_run_polynomial():
    cfg = g.Config(
        seed="pilot:0",
        profile="smoke",
        dim=12,
        n_train=60,
        n_test=40,
        width=4,
        alphas=[0.25, 1.0, 4.0],
        align_alpha=1.0,
        steps=60,
        checkpoints=15,
        n_seeds=2,
        workers=1,
        device="cpu",
    )
    out = g.run(cfg)
    assert len(out.runs) == 2 * 4 and set(out.runs["seed"]) == {0, 1}
    assert set(out.runs["arm"]) == {"alpha=0.25", "alpha=1", "alpha=4", "alpha=1,rho=0.6"}
    assert out.runs["delay"].notna().any()
    first = out.history[out.history["step"] == 0]
    assert np.allclose(
        first.groupby(["seed", "rho"])["train_loss"].nunique(), 1
    )  # f = 0 at init for every alpha


def test_smoke_run_modular_skips_the_aligned_arm():
    cfg = g.Config(
        seed="pilot:0",
        profile="smoke",
        task="modular",
        modulus=7,
        width=8,
        alphas=[0.5, 1.0],
        steps=40,
        checkpoints=10,
        n_seeds=1,
        workers=1,
        device="cpu",
    )
    out = g.run(cfg)
    assert set(out.runs["arm"]) == {"alpha=0.5", "alpha=1"}
    assert np.isfinite(out.history["test_loss"]).all()
