"""Uncertainty weighting's tasks, arms and config (the loss math itself: tests/test_multitask.py)."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
import torch

from replikit import claims
from replikit.config import ConfigError
from replikit.families import multitask
from replikit.methods import load_config
from replikit.methods import uncertainty_weighting as uw


@pytest.mark.parametrize("profile", ["smoke", "default", "full"])
def test_every_profile_validates(profile):
    cfg = load_config("uncertainty_weighting", profile=profile)
    assert cfg.mass_scale > cfg.centroid_scale


@pytest.mark.parametrize(
    "override",
    [
        {"grid_mass": []},
        {"grid_centroid": [0.0]},
        {"val_fraction": 0.0},
        {"lr": 0.0},
        {"model": "vit"},
        {"weights": [1, 2]},
    ],
)
def test_bad_configs_are_rejected(override):
    with pytest.raises(ConfigError):
        load_config("uncertainty_weighting", profile="default", overrides=override)


def test_targets_have_the_declared_scales():
    cfg = uw.Config(mass_scale=10.0, centroid_scale=0.1)
    parts = uw.splits(cfg, rep=0)
    x, (y_cls, y_mass, y_cent) = parts["train"]
    assert y_cls.dtype == np.int64 and y_mass.shape == (len(x), 1)
    assert y_mass.std() == pytest.approx(10.0, rel=1e-3)
    assert y_cent.std() == pytest.approx(0.1, rel=1e-3)
    assert len(parts["val"][0]) == pytest.approx(0.2 * (len(x) + len(parts["val"][0])), abs=1)


def test_learned_weights_are_the_papers_factors():
    tasks = uw.make_tasks(uw.Config())
    w = multitask.Uncertainty(tasks)
    with torch.no_grad():
        w.log_vars.copy_(torch.tensor([math.log(2.0), 0.0, math.log(4.0)]))
    # classification 1/sigma^2, regression 1/(2 sigma^2)
    torch.testing.assert_close(w.weights(), torch.tensor([0.5, 0.5, 0.125]))


def _row(arm, seed, val, test, **extra):
    row = {"arm": arm, "seed": seed}
    for t in uw.TASK_NAMES:
        row[f"val_nerr_{t}"], row[f"test_nerr_{t}"] = val, test
    return {**row, **extra}


def test_single_task_arms_combine_per_seed():
    table = pd.DataFrame(
        [
            _row("single_class", 0, 0.1, 0.2, val_acc=0.9, test_acc=0.8),
            {"arm": "single_mass", "seed": 0, "val_nerr_mass": 0.3, "test_nerr_mass": 0.4},
            {"arm": "single_centroid", "seed": 0, "val_nerr_centroid": 0.5, "test_nerr_centroid": 0.6},
        ]
    )
    single = uw.with_means(uw.combine_single(table))
    assert single.loc[0, "test_nerr"] == pytest.approx((0.2 + 0.4 + 0.6) / 3)
    assert single.loc[0, "test_acc"] == pytest.approx(0.8)


def test_grid_best_uses_validation_not_test():
    table = uw.with_means(
        pd.DataFrame(
            [
                _row("fixed", 0, 0.3, 0.1, grid_w_mass=0.01),
                _row("fixed", 0, 0.2, 0.9, grid_w_mass=0.1),
                _row("equal", 0, 0.0, 0.0),
            ]
        )
    )
    best = uw.grid_best(table)
    assert list(best["grid_w_mass"]) == [0.1] and list(best["arm"]) == ["grid"]


def test_claims_without_their_arms_are_skipped_and_near_grid_is_relative():
    assert all(c.id.startswith("uncertainty_weighting.") for c in uw.CLAIMS)
    runs = pd.DataFrame(
        {
            "arm": ["equal", "uncertainty", "grid"] * 3,
            "seed": np.repeat([0, 1, 2], 3),
            "test_nerr": [0.064, 0.060, 0.050, 0.070, 0.062, 0.055, 0.060, 0.058, 0.052],
            "test_acc": [0.93, 0.96, 0.95, 0.92, 0.95, 0.95, 0.94, 0.96, 0.96],
        }
    )
    results = {r.claim.id: r for r in claims.judge_all(uw.CLAIMS, runs)}
    assert results["uncertainty_weighting.beats_single_task"].verdict == "skipped"
    # near_grid's effect is relative to the grid's error, per seed: (grid - uncertainty) / grid
    expected = np.mean([(0.050 - 0.060) / 0.050, (0.055 - 0.062) / 0.055, (0.052 - 0.058) / 0.052])
    assert results["uncertainty_weighting.near_grid"].effect == pytest.approx(expected, rel=1e-4)


def test_claims_declare_deltas_and_near_grid_is_a_relative_non_inferiority():
    for c in uw.CLAIMS:
        assert c.delta > 0 and c.delta_reason, c.id
        assert "[" not in c.quote, c.id
    near = next(c for c in uw.CLAIMS if c.id == "uncertainty_weighting.near_grid")
    assert near.kind == "non_inferiority" and near.relative and near.baseline == "grid"
    single = next(c for c in uw.CLAIMS if c.id == "uncertainty_weighting.beats_single_task")
    assert single.quote.startswith("Perhaps surprisingly, we show our model can learn")


def test_select_trains_only_the_asked_arms_and_whole_grid_or_single():
    from replikit.methods import uncertainty_weighting as uw

    cfg = load_config(
        "uncertainty_weighting", profile="smoke", overrides={"n_seeds": 2, "workers": 1, "epochs": 1}
    )
    out = uw.run(cfg, select=lambda arm, seed: seed == 0 or arm in ("uncertainty", "grid"))
    assert set(out.runs.loc[out.runs["seed"] == 1, "arm"]) == {"uncertainty", "grid"}
    grid = out.extras["grid"]
    assert grid.groupby("seed").size().nunique() == 1  # every grid point for both seeds
    assert set(out.extras["single_runs"]["seed"]) <= {0}


def test_packed_runs_give_the_rows_of_the_runs_one_by_one():
    """pack > 0: each seed's equal, uncertainty, grid and single-task runs in one vmapped model (a
    single-task network packed as the three-headed one with one-hot weights) give run_one's rows to float
    tolerance, in the same order; what else shares a pack changes nothing."""
    cfg = load_config(
        "uncertainty_weighting", profile="smoke", overrides={"n_seeds": 1, "workers": 1, "epochs": 2}
    )
    plain = uw.run(cfg.model_copy(update={"pack": 0}))
    packed = uw.run(cfg.model_copy(update={"pack": 16}))
    pairs = ((packed.runs, plain.runs), (packed.extras["grid"], plain.extras["grid"]))
    for a, b in (*pairs, (packed.history, plain.history)):
        assert list(a["arm"]) == list(b["arm"]) and list(a.columns) == list(b.columns)
        numbers = [c for c in b.columns if c not in ("arm", "seed")]
        np.testing.assert_allclose(a[numbers].astype(float), b[numbers].astype(float), rtol=1e-4, atol=1e-5)
    args = cfg.model_copy(update={"pack": 16}).model_dump(), 0
    alone = uw.run_pack(*args, [("single_mass", None)])[0]
    crowd = uw.run_pack(*args, [("equal", None), ("fixed", (1.0, 0.1, 10.0)), ("single_mass", None)])
    assert alone == crowd[2]
    with pytest.raises(ValueError, match="max_grad_norm"):
        uw.run_pack(dict(args[0], max_grad_norm=5.0), 0, [("equal", None)])


def test_history_names_each_runs_own_tasks_and_tracks_the_learned_weights():
    """history.csv: per epoch, every non-grid run's training losses and weights, named by task. A
    single-task run has its own task's columns only (packed, it is the three-headed network: its other
    heads' losses must not leak in); equal weighting stays at 1; the learned weights move from their
    start, c_i exp(-s_0), towards 1/(2 L_i), the optimum of s_i, for every task."""
    cfg = load_config(
        "uncertainty_weighting",
        profile="smoke",
        overrides={"n_seeds": 1, "workers": 1, "epochs": 6, "grid_mass": [1.0], "grid_centroid": [1.0]},
    )
    for pack in (0, 16):
        h = uw.run(cfg.model_copy(update={"pack": pack})).history
        assert set(h["arm"]) == {"equal", "uncertainty", *(f"single_{t}" for t in uw.TASK_NAMES)}
        assert sorted(h["epoch"].unique()) == list(range(1, 7))
        mass = h[h["arm"] == "single_mass"]
        assert mass[["loss_mass", "w_mass"]].notna().all().all()
        assert mass[["loss_class", "w_class", "loss_centroid"]].isna().all().all()
        assert (h.loc[h["arm"] == "equal", [f"w_{t}" for t in uw.TASK_NAMES]] == 1.0).all().all()
        unc = h[h["arm"] == "uncertainty"].set_index("epoch")
        for t, c in zip(uw.TASK_NAMES, (1.0, 0.5, 0.5)):
            first, last = unc.loc[1, f"w_{t}"], unc.loc[6, f"w_{t}"]
            optimum = 0.5 / unc.loc[6, f"loss_{t}"]
            assert abs(np.log(last / optimum)) < abs(np.log(c / optimum)), t  # closer than at the start
            assert first != last
        long = uw.by_task(h[h["arm"] == "single_mass"], "w_")
        assert set(long["task"]) == {"mass"} and len(long) == 6
        gap = uw.weight_gap(h)
        for t in uw.TASK_NAMES:
            row = gap.loc[t]
            assert row["learned"] == pytest.approx(unc.loc[6, f"w_{t}"])
            assert row["1/(2 L)"] == pytest.approx(0.5 / unc.loc[6, f"loss_{t}"])
            assert row["learned / called"] == pytest.approx(row["learned"] / row["1/(2 L)"])
