"""GradNorm's benchmark, grid and config (the weighting math itself: tests/test_multitask.py)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from replikit import claims
from replikit.config import ConfigError
from replikit.methods import gradnorm as gn
from replikit.methods import load_config


@pytest.mark.parametrize("profile", ["smoke", "default", "full"])
def test_every_profile_validates(profile):
    cfg = load_config("gradnorm", profile=profile)
    assert cfg.alpha == pytest.approx(0.12)


@pytest.mark.parametrize(
    "override",
    [
        {"task_counts": [1]},
        {"alpha": -0.1},
        {"alpha_typo": 1.0},
        {"optimizers": ["rmsprop"]},
        {"grid_gammas": [0.0]},
        {"model": "resnet18"},
        {"dataset": "cifar10", "task_counts": [10]},
        {"lrs_sgd": []},
        {"lrs_adam": [0.0]},
        {"lr_sgd": 0.1},
    ],
)
def test_bad_configs_are_rejected(override):
    with pytest.raises(ConfigError):
        load_config("gradnorm", profile="default", overrides=override)


def test_sigmas_span_the_paper_ratio():
    np.testing.assert_allclose(gn.sigmas(2, 100.0, 1.0), [1.0, 100.0])
    s = gn.sigmas(10, 100.0, 0.01)
    assert s[0] == pytest.approx(0.01) and s[-1] == pytest.approx(1.0) and len(s) == 10


def test_toy_problem_scales_and_unsaturated_tanh():
    cfg = gn.Config(n_train=3000, n_val=100, n_test=100, in_dim=20, out_dim=30, target_scale=1.0)
    prob = gn.toy_problem(cfg, 2, rep=0)
    y0, y1 = prob["ys"]
    assert prob["x"].shape == (3200, 20) and y0.shape == (3200, 30)
    assert y1.std() / y0.std() == pytest.approx(100.0, rel=0.05)  # sigma ratio
    # tanh argument has unit std: |tanh| rarely near 1 (not saturated), and targets are not signs
    assert np.mean(np.abs(y0) > 0.99) < 0.05
    assert 0.5 < y0.std() < 0.75  # std of tanh(N(0,1)) is about 0.63
    again = gn.toy_problem(cfg, 2, rep=0)
    np.testing.assert_array_equal(again["x"], prob["x"])


def test_grid_weights_sum_to_T_and_invert_variance():
    sig = np.array([1.0, 10.0, 100.0])
    w = gn.grid_weights(sig, 1.0)
    assert w.sum() == pytest.approx(3.0)
    assert w[0] / w[1] == pytest.approx(100.0) and w[1] / w[2] == pytest.approx(100.0)
    np.testing.assert_allclose(gn.grid_weights(sig, 0.0), [1.0, 1.0, 1.0])


def test_grid_arm_picks_the_best_validation_point_per_seed():
    rows = []
    for seed, vals in enumerate([(0.5, 0.4, 0.6), (0.3, 0.4, 0.2)]):
        for w, v in zip(["equal", "g0.5", "g1"], vals):
            rows.append(
                {
                    "arm": gn.arm_name("sgd", 2, w),
                    "seed": seed,
                    "optimizer": "sgd",
                    "T": 2,
                    "weighting": w,
                    "val_nloss": v,
                    "test_nloss": 10 * v,
                }
            )
        rows.append(
            {
                "arm": gn.arm_name("sgd", 2, "gradnorm"),
                "seed": seed,
                "optimizer": "sgd",
                "T": 2,
                "weighting": "gradnorm",
                "val_nloss": 0.0,
                "test_nloss": 0.0,
            }
        )
    best = gn.grid_arm(pd.DataFrame(rows), "sgd", 2).set_index("seed")
    assert list(best["grid_choice"]) == ["g0.5", "g1"]  # gradnorm is never a grid candidate
    assert list(best["test_nloss"]) == pytest.approx([4.0, 2.0])
    assert set(best["arm"]) == {"sgd/T2/grid"}
    # a seed that ran only some grid points (a later sequential look) gets no grid row, not a lesser choice
    partial = pd.DataFrame([r for r in rows if not (r["seed"] == 1 and r["weighting"] == "g1")])
    complete = gn.complete_grid_seeds(partial, "sgd", 2, n_points=3)
    assert complete == {0}
    assert list(gn.grid_arm(partial, "sgd", 2, complete)["seed"]) == [0]


def test_run_trains_what_select_asks_and_every_grid_point_for_the_grid_arm():
    cfg = load_config("gradnorm", profile="smoke", overrides={"n_seeds": 2, "workers": 1})
    calls = []

    def select(arm, seed):
        calls.append((arm, seed))
        return seed == 0 or arm == "sgd/T2/grid"

    out = gn.run(cfg, select=select)
    later = out.runs[out.runs["seed"] == 1]
    assert set(later["arm"]) == {"sgd/T2/grid", "sgd/T2/equal", "sgd/T2/g1"}  # the grid's points came along
    assert set(out.runs.loc[out.runs["seed"] == 0, "arm"]) >= {"sgd/T2/gradnorm", "sgd/T2/grid"}


def _lr_row(weighting, seed, lr, val, test, opt="adam", t=2):
    return {
        "arm": gn.arm_name(opt, t, weighting),
        "seed": seed,
        "optimizer": opt,
        "T": t,
        "weighting": weighting,
        "lr": lr,
        "val_nloss": val,
        "test_nloss": test,
    }


def test_learning_rate_is_picked_per_arm_and_seed_on_validation_not_test():
    table = pd.DataFrame(
        [
            # equal, seed 0: 1e-3 is better on validation, 3e-3 on test -> 1e-3
            _lr_row("equal", 0, 1e-3, 0.30, 0.90),
            _lr_row("equal", 0, 3e-3, 0.40, 0.10),
            # gradnorm, seed 0: the other way round -> 3e-3 (each arm chooses for itself)
            _lr_row("gradnorm", 0, 1e-3, 0.50, 0.05),
            _lr_row("gradnorm", 0, 3e-3, 0.20, 0.80),
            # equal, seed 1: the run at 3e-3 diverged (infinite validation loss) -> never chosen
            _lr_row("equal", 1, 1e-3, 0.60, 0.60),
            _lr_row("equal", 1, 3e-3, np.inf, np.nan),
        ]
    )
    picked = gn.pick_learning_rates(table).set_index(["weighting", "seed"])
    assert picked.loc[("equal", 0), "lr"] == 1e-3 and picked.loc[("equal", 0), "test_nloss"] == 0.90
    assert picked.loc[("gradnorm", 0), "lr"] == 3e-3
    assert picked.loc[("equal", 1), "lr"] == 1e-3
    assert len(picked) == 3


def test_claims_declare_deltas_and_verbatim_quotes():
    for c in gn.CLAIMS:
        assert c.delta > 0 and c.delta_reason, c.id
        assert "[" not in c.quote, c.id
    ni = [c for c in gn.CLAIMS if c.kind == "non_inferiority"]
    assert ni and all(c.relative for c in ni)


def test_claims_whose_arms_did_not_run_are_skipped():
    assert all(c.id.startswith("gradnorm.") for c in gn.CLAIMS)
    arms = ["sgd/T2/equal", "sgd/T2/gradnorm", "sgd/T2/grid"]
    runs = pd.DataFrame(
        {
            "arm": arms * 3,
            "seed": np.repeat([0, 1, 2], 3),
            "test_nloss": [0.4, 0.38, 0.4, 0.5, 0.45, 0.5, 0.3, 0.31, 0.3],
        }
    )
    judged = {r.claim.id for r in claims.judge_all(gn.CLAIMS, runs) if r.verdict != "skipped"}
    assert judged == {"gradnorm.beats_equal_sgd_T2", "gradnorm.matches_grid_sgd_T2"}


def test_packed_runs_give_the_rows_of_the_runs_one_by_one():
    """pack > 0: each (T, optimiser, seed)'s weightings and learning rates in one vmapped model give the
    rows, histories and weight traces of run_one to float tolerance (another draw: batched kernels sum in
    another order); what else shares a pack changes nothing."""
    over = {"n_seeds": 1, "workers": 1, "epochs": 2, "optimizers": ["adam"], "grid_optimizers": ["adam"]}
    cfg = load_config("gradnorm", profile="smoke", overrides=dict(over, lrs_adam=[1e-3, 3e-3]))
    plain = gn.run(cfg.model_copy(update={"pack": 0}))
    packed = gn.run(cfg.model_copy(update={"pack": 8}))
    assert len(packed.runs) == len(plain.runs) and (packed.runs["arm"] == plain.runs["arm"]).all()
    numbers = [c for c in plain.runs.columns if c.startswith(("val_", "test_", "w_final", "rate_"))]
    np.testing.assert_allclose(packed.runs[numbers], plain.runs[numbers], rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(packed.history["train_loss"], plain.history["train_loss"], rtol=1e-4)
    traces = packed.extras["weight_trace"], plain.extras["weight_trace"]
    assert len(traces[0]) == len(traces[1]) > 0
    np.testing.assert_allclose(traces[0]["w_0"], traces[1]["w_0"], rtol=1e-4)
    one = gn.run_pack(cfg.model_copy(update={"pack": 8}).model_dump(), 2, "adam", 0, [("gradnorm", 3e-3)])
    crowd = gn.run_pack(
        cfg.model_copy(update={"pack": 8}).model_dump(),
        2,
        "adam",
        0,
        [("equal", 1e-3), ("g1", 3e-3), ("gradnorm", 3e-3)],
    )
    assert one[0]["row"] == crowd[2]["row"] and one[0]["trace"] == crowd[2]["trace"]


def test_a_diverged_member_of_a_pack_is_recorded_as_run_one_records_it():
    cfg = load_config("gradnorm", profile="smoke", overrides={"n_seeds": 1, "workers": 1, "pack": 4})
    out = gn.run_pack(cfg.model_dump(), 2, "sgd", 0, [("equal", 1e-3), ("equal", 50.0)])
    assert out[1]["row"]["diverged"] and out[1]["row"]["val_nloss"] == np.inf and out[1]["history"] == []
    assert not out[0]["row"]["diverged"] and np.isfinite(out[0]["row"]["val_nloss"])
