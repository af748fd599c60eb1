"""Task arithmetic: lambda selection rules on hand-made validation curves, claims, config validation."""

from __future__ import annotations

import pandas as pd
import pytest

from replikit import claims, config
from replikit.methods import task_arithmetic as TA


def test_negation_lambda_is_the_lowest_target_under_the_control_floor():
    target = {0.25: 0.60, 0.5: 0.40, 1.0: 0.10}
    control = {0.25: 0.80, 0.5: 0.77, 1.0: 0.50}
    # floor 0.76: 1.0 would forget most but breaks the control; 0.5 is the best allowed
    assert TA.choose_negation_lambda(target, control, 0.76) == 0.5
    assert TA.choose_negation_lambda(target, control, 0.40) == 1.0
    # nothing qualifies: no edit
    assert TA.choose_negation_lambda(target, control, 0.95) == 0.0


def test_addition_lambda_maximises_normalized_validation_accuracy():
    assert TA.choose_addition_lambda({0.1: 0.80, 0.3: 0.90, 0.5: 0.85}) == 0.3


def test_claims_judge_hand_made_runs():
    rows = []
    for seed, (pre, add, tgt_pre, tgt_neg, ctl_pre, ctl_neg) in enumerate(
        [
            (0.70, 0.80, 0.75, 0.40, 0.80, 0.80),
            (0.72, 0.83, 0.74, 0.45, 0.81, 0.80),
            (0.69, 0.79, 0.73, 0.35, 0.79, 0.79),
        ]
    ):
        rows += [
            {
                "arm": "pretrained",
                "seed": seed,
                "avg_acc": pre,
                "min_gain": 0.0,
                "target_acc": tgt_pre,
                "control_acc": ctl_pre,
            },
            {"arm": "added", "seed": seed, "avg_acc": add, "min_gain": 0.01},
            {"arm": "negated", "seed": seed, "target_acc": tgt_neg, "control_acc": ctl_neg},
        ]
    verdicts = {r.claim.id.split(".")[1]: r for r in claims.judge_all(TA.CLAIMS, pd.DataFrame(rows))}
    assert verdicts["addition_gain"].effect == pytest.approx((0.10 + 0.11 + 0.10) / 3)
    assert verdicts["negation_target"].effect == pytest.approx(
        (0.35 + 0.29 + 0.38) / 3
    )  # a drop counts positive
    assert verdicts["negation_control"].effect == pytest.approx(-0.01 / 3)
    assert verdicts["negation_target"].verdict == "reproduced"
    assert verdicts["negation_control"].verdict == "reproduced"


def test_config_validation():
    params = config.read_params()
    for profile in config.PROFILES:  # the full profile validates (it is not run here)
        cfg = config.resolve("task_arithmetic", TA.Config, params, profile)
        assert cfg.profile == profile
    assert config.resolve("task_arithmetic", TA.Config, params, "full").dataset == "images"
    for bad in (
        {"n_tasks": 9},
        {"lambdas": [0.0, 0.5]},
        {"lambdas": []},
        {"control_retention": 1.5},
        {"dataset": "cifar100"},
        {"lam": 0.3},
    ):
        with pytest.raises(config.ConfigError):
            config.resolve("task_arithmetic", TA.Config, params, "smoke", bad)
    assert TA.Config(lambdas=[0.5, 0.1]).lambdas == [0.1, 0.5]
