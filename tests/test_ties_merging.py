"""TIES-Merging: validation-only tuning, the margin-growth statistic, claims, config validation."""

from __future__ import annotations

from types import SimpleNamespace
from typing import ClassVar

import numpy as np
import pandas as pd
import pytest
import torch

from replikit import config
from replikit.methods import ties_merging as T


class FakeSuite:
    """Accuracy = 1 - |w - best| with a different best w on validation (0.5) and test (1.0)."""

    pretrained: ClassVar = SimpleNamespace(state={"w": torch.tensor([0.0])})
    best: ClassVar[dict[str, float]] = {"val": 0.5, "test": 1.0}

    def accuracies(self, state, names, split="test"):
        return {n: 1.0 - abs(state["w"].item() - self.best[split]) for n in names}


def test_tune_chooses_lambda_on_validation_and_reads_test_once():
    out = T.tune(FakeSuite(), {"w": torch.tensor([1.0])}, ["a", "b"], [0.25, 0.5, 1.0])
    assert out["coef"] == 0.5  # the validation optimum, not the test one (1.0)
    assert out["test_acc"] == pytest.approx(0.5)
    assert out["val_acc"] == pytest.approx(1.0)
    assert sum(np.isfinite(c["test_acc"]) for c in out["curve"]) == 1


def _runs(ta2, ties2, ta8, ties8):
    rows = []
    for seed in range(len(ta2)):
        rows.append(
            {
                "arm": "task_arithmetic",
                "seed": seed,
                "acc_n2": ta2[seed],
                "acc_n8": ta8[seed],
                "acc_all": ta8[seed],
            }
        )
        rows.append(
            {
                "arm": "ties",
                "seed": seed,
                "acc_n2": ties2[seed],
                "acc_n8": ties8[seed],
                "acc_all": ties8[seed],
            }
        )
    return pd.DataFrame(rows)


def test_margin_growth_by_hand():
    runs = _runs(ta2=[0.90, 0.92], ties2=[0.91, 0.90], ta8=[0.70, 0.72], ties8=[0.75, 0.71])
    # seed 0: (0.75 - 0.70) - (0.91 - 0.90) = 0.04; seed 1: (0.71 - 0.72) - (0.90 - 0.92) = 0.01
    np.testing.assert_allclose(T.margin_growth(runs, 2, 8).to_numpy(), [0.04, 0.01], atol=1e-12)
    stat = T.margin_growth_statistic(runs.sample(frac=1.0, random_state=0))  # row order does not matter
    assert stat.index.tolist() == [0, 1]
    np.testing.assert_allclose(stat.to_numpy(), [0.04, 0.01], atol=1e-12)


def test_margin_growth_statistic_uses_the_extreme_task_counts():
    runs = _runs(ta2=[0.9], ties2=[0.9], ta8=[0.7], ties8=[0.8]).assign(acc_n4=0.5)
    assert T.margin_growth_statistic(runs).iloc[0] == pytest.approx(0.1)


def test_margin_growth_statistic_is_empty_without_two_task_counts():
    runs = _runs(ta2=[0.9], ties2=[0.9], ta8=[0.7], ties8=[0.8]).drop(columns="acc_n2")
    assert len(T.margin_growth_statistic(runs)) == 0
    assert len(T.margin_growth_statistic(runs[runs["arm"] == "ties"])) == 0


def test_claims_are_declared_with_deltas_and_the_derived_one_has_its_statistic():
    assert all(c.delta > 0 and c.delta_reason for c in T.CLAIMS)
    derived = [c for c in T.CLAIMS if c.statistic is not None]
    assert [c.id for c in derived] == ["ties_merging.margin_grows"]
    assert derived[0].quote_kind == "paraphrase"


def test_config_validation():
    params = config.read_params()
    for profile in config.PROFILES:
        config.resolve("ties_merging", T.Config, params, profile)
    assert config.resolve("ties_merging", T.Config, params, "full").model == "resnet18"
    for bad in (
        {"k": 0.0},
        {"k": 1.5},
        {"task_counts": [2, 2]},
        {"task_counts": [1, 8]},
        {"task_counts": [8]},
        {"k_sweep": [0.2, 2.0]},
        {"ties_lambdas": [-1.0]},
        {"width": 0},
    ):
        with pytest.raises(config.ConfigError):
            config.resolve("ties_merging", T.Config, params, "smoke", bad)
    assert T.Config(task_counts=[8, 2]).task_counts == [2, 8]
