"""The one judge: paired, single-arm, relative and derived effects, the decision rule with delta,
skipped claims, the distance to a flip; tested on hand-made effects."""

import math

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from replikit.claims import Claim, decide, flip_margin, judge, judge_all, judge_effects, mean_ci

CLAIM = Claim(id="m.c", paper="P", quote="q", metric="acc", treatment="new", baseline="old", delta=0.01)


def like(**kw) -> Claim:
    return Claim(**{**CLAIM.__dict__, **kw})


def runs(new, old):
    return pd.DataFrame(
        [{"arm": "new", "seed": i, "acc": v} for i, v in enumerate(new)]
        + [{"arm": "old", "seed": i, "acc": v} for i, v in enumerate(old)]
    )


def test_mean_ci_matches_a_hand_computed_t_interval():
    x = np.array([1.0, 2.0, 3.0, 4.0])
    mean, low, high = mean_ci(x)
    half = stats.t.ppf(0.975, 3) * np.std(x, ddof=1) / 2.0
    assert mean == 2.5 and low == pytest.approx(2.5 - half) and high == pytest.approx(2.5 + half)
    assert half == pytest.approx(3.182446 * 1.290994 / 2, rel=1e-5)
    _, low99, high99 = mean_ci(x, 0.99)
    assert low99 < low and high99 > high  # a smaller alpha widens the interval


def test_effects_are_paired_by_seed_not_by_row_order():
    df = runs([0.8, 0.9, 0.7], [0.6, 0.7, 0.5]).sample(frac=1.0, random_state=1)
    r = judge(CLAIM, df)
    assert r.effect == pytest.approx(0.2) and r.ci_low == pytest.approx(0.2)  # identical paired gains
    assert r.verdict == "reproduced" and r.n_seeds == 3


def test_superiority_rule_with_delta():
    # reproduced: interval excludes 0 AND mean >= delta
    assert decide(CLAIM, 0.05, 0.03, 0.07) == "reproduced"
    assert decide(CLAIM, 0.05, 0.001, 0.099) == "reproduced"  # low > 0 suffices when the mean clears delta
    # significant but below delta: the whole interval lies below delta -> not reproduced
    assert decide(CLAIM, 0.005, 0.002, 0.008) == "not_reproduced"
    # mean below delta, interval reaching above it: inconclusive
    assert decide(CLAIM, 0.008, 0.001, 0.015) == "inconclusive"
    # mean above delta but interval touching 0: inconclusive
    assert decide(CLAIM, 0.02, -0.01, 0.05) == "inconclusive"
    assert decide(CLAIM, 0.02, math.nan, math.nan) == "inconclusive"


def test_a_true_zero_effect_is_decidable():
    zero = judge(CLAIM, runs([0.7, 0.7, 0.7], [0.7, 0.7, 0.7]))  # 0 +- 0: the adv_weight: 0 case
    assert (zero.effect, zero.ci_low, zero.ci_high) == (0.0, 0.0, 0.0)
    assert zero.verdict == "not_reproduced" and zero.margin == math.inf
    rng = np.random.default_rng(0)
    tight = judge_effects(CLAIM, rng.normal(0.0, 0.002, size=30))  # noise around 0, many seeds
    assert tight.verdict == "not_reproduced"


def test_non_inferiority_uses_delta_as_the_margin():
    kept = like(kind="non_inferiority", delta=0.02)
    assert decide(kept, -0.005, -0.01, 0.0) == "reproduced"
    assert decide(kept, -0.05, -0.06, -0.04) == "not_reproduced"
    assert decide(kept, -0.02, -0.04, 0.0) == "inconclusive"


def test_lower_is_better_flips_the_sign():
    loss = like(metric="loss", higher_is_better=False)
    df = runs([0.1, 0.12, 0.11], [0.3, 0.31, 0.29]).rename(columns={"acc": "loss"})
    assert judge(loss, df).effect > 0 and judge(loss, df).verdict == "reproduced"


def test_relative_effects_divide_by_the_baseline_seed_by_seed():
    rel = like(metric="err", higher_is_better=False, relative=True, kind="non_inferiority", delta=0.1)
    df = runs([0.11, 0.22], [0.10, 0.20]).rename(columns={"acc": "err"})  # 10% worse on both seeds
    r = judge(rel, df)
    assert r.effect == pytest.approx(-0.1) and r.ci_low == pytest.approx(-0.1)


def test_single_arm_against_a_constant():
    one = like(baseline=None, constant=0.5, delta=0.05)
    df = pd.DataFrame({"arm": "new", "seed": [0, 1, 2], "acc": [0.61, 0.60, 0.62]})
    r = judge(one, df)
    assert r.effect == pytest.approx(0.11) and r.verdict == "reproduced" and r.baseline_mean == 0.5
    assert one.comparison == "new vs 0.5"


def spread(runs: pd.DataFrame) -> pd.Series:
    """A derived statistic: the new arm's gain at T=4 minus its gain at T=2, per seed."""
    w = runs.pivot_table(index="seed", columns=["arm", "T"], values="acc")
    return (w["new", 4] - w["old", 4]) - (w["new", 2] - w["old", 2])


def test_derived_claims_judge_a_statistic_per_seed_and_name_it():
    grows = like(statistic=spread, delta=0.01)
    df = pd.DataFrame(
        [
            {"arm": a, "T": t, "seed": s, "acc": 0.5 + (0.03 * t if a == "new" else 0) + 0.001 * s}
            for a in ("new", "old")
            for t in (2, 4)
            for s in range(3)
        ]
    )
    r = judge(grows, df)
    assert r.effect == pytest.approx(0.06) and r.verdict == "reproduced"
    assert grows.comparison == "spread per seed" and math.isnan(r.treatment_mean)


def test_claims_that_cannot_run_are_skipped_with_the_reason():
    out = judge_all([CLAIM, like(id="m.d", treatment="gone")], runs([0.8, 0.9], [0.6, 0.7]))
    assert [r.verdict for r in out] == ["reproduced", "skipped"]
    assert "arm 'gone' did not run" in out[1].reason and out[1].to_json()["reason"] == out[1].reason
    missing_metric = judge(like(metric="nope"), runs([0.5], [0.5]))
    assert missing_metric.verdict == "skipped" and "metric 'nope'" in missing_metric.reason


def test_flip_margin_in_half_widths():
    assert flip_margin(CLAIM, 0.05, 0.03, 0.07) == pytest.approx(1.5)  # low 0.03 is 1.5 half-widths above 0
    assert flip_margin(CLAIM, 0.005, 0.002, 0.008) == pytest.approx((0.01 - 0.008) / 0.003)
    assert flip_margin(CLAIM, 0.02, -0.01, 0.05) < 0  # inconclusive: negative


def test_every_declared_claim_has_a_positive_delta_and_its_reason():
    from replikit.methods import available, get_method

    for name in available():
        for claim in get_method(name).CLAIMS:
            assert claim.id.startswith(f"{name}."), claim.id
            assert claim.delta is not None and claim.delta > 0, f"{claim.id}: no positive delta"
            assert claim.delta_reason, f"{claim.id}: delta without its reason"
            assert "[" not in claim.quote.replace("[...]", ""), f"{claim.id}: a gloss inside the quote"


def test_non_finite_effects_fail_clearly():
    with pytest.raises(ValueError, match="non-finite"):
        judge_effects(CLAIM, np.array([0.1, math.nan]))


def test_non_inferiority_flip_margin_in_half_widths():
    kept = like(kind="non_inferiority", delta=0.02)
    assert flip_margin(kept, -0.005, -0.01, 0.0) == pytest.approx(2.0)  # low -0.01 is 0.01 above -delta
    assert flip_margin(kept, -0.05, -0.06, -0.04) == pytest.approx(2.0)  # high -0.04 is 0.02 below -delta
    # inconclusive: the nearer decision is 'reproduced', low 0.02 below -delta (the other is 0.03 away)
    assert flip_margin(kept, -0.015, -0.04, 0.01) == pytest.approx(-0.02 / 0.025)


def test_a_zero_width_interval_flips_never_or_is_undecided_forever():
    """0 +- 0: an infinite margin when decided, minus infinity when it sits on the boundary itself."""
    kept = like(kind="non_inferiority", delta=0.02)
    assert flip_margin(kept, 0.0, 0.0, 0.0) == math.inf  # reproduced
    assert flip_margin(kept, -0.03, -0.03, -0.03) == math.inf  # not reproduced
    assert decide(kept, -0.02, -0.02, -0.02) == "inconclusive"  # exactly -delta
    assert flip_margin(kept, -0.02, -0.02, -0.02) == -math.inf
    assert flip_margin(CLAIM, 0.01, 0.01, 0.01) == math.inf  # exactly delta: reproduced (below)


def test_decision_boundaries_are_pinned():
    """Strict at the interval bounds (low > 0, low > -delta, high < delta), inclusive for the mean (>= delta)."""
    assert decide(CLAIM, 0.01, 0.01, 0.01) == "reproduced"  # mean exactly delta, zero width
    assert decide(CLAIM, 0.02, 0.0, 0.04) == "inconclusive"  # low exactly 0 does not exclude 0
    assert decide(CLAIM, 0.005, 0.001, 0.01) == "inconclusive"  # high exactly delta is not below it
    kept = like(kind="non_inferiority", delta=0.02)
    assert decide(kept, -0.01, -0.02, 0.0) == "inconclusive"  # low exactly -delta is not above it
    assert decide(kept, -0.03, -0.04, -0.02) == "inconclusive"  # high exactly -delta is not below it


def test_baseline_metric_compares_against_another_column_of_the_baseline():
    best = like(baseline_metric="best_acc")
    df = runs([0.80, 0.82, 0.84], [0.70, 0.70, 0.70])
    df["best_acc"] = [0.9, 0.9, 0.9, 0.75, 0.77, 0.79]  # new's best is never read
    r = judge(best, df)
    assert r.effect == pytest.approx(0.05) and r.ci_low == pytest.approx(0.05)  # acc - best_acc per seed
    assert r.baseline_mean == pytest.approx(0.77) and r.treatment_mean == pytest.approx(0.82)


def test_an_arm_whose_metric_is_all_nan_is_skipped():
    r = judge(CLAIM, runs([0.8, 0.9], [math.nan, math.nan]))
    assert r.verdict == "skipped"
    assert r.reason == "metric 'acc' was not measured for arm 'old' with these parameters"


def test_only_the_seeds_both_arms_ran_are_paired():
    r = judge(CLAIM, runs([0.8, 0.8, 0.8, 0.0], [0.7, 0.7, 0.7]))  # treatment seeds 0-3, baseline 0-2
    assert r.n_seeds == 3 and r.effect == pytest.approx(0.1) and r.treatment_mean == pytest.approx(0.8)


def test_relative_effects_take_the_sign_of_the_difference_for_a_negative_baseline():
    """Divided by |baseline|: -0.4 against -0.5 is a 20% gain, not a 20% loss."""
    rel = like(relative=True, delta=0.05)
    r = judge(rel, runs([-0.4, -0.9], [-0.5, -1.0]))
    assert r.effect == pytest.approx((0.2 + 0.1) / 2) and r.ci_low < r.effect < r.ci_high
