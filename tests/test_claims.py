"""judge(): effects paired by seed, t-intervals, the three verdicts."""

import math

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from replikit.claims import Claim, decide, judge, judge_effects, mean_ci

CLAIM = Claim(id="m.c", paper="P", quote="q", metric="acc", treatment="new", baseline="old")


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


def test_effects_are_paired_by_seed_not_by_row_order():
    df = runs([0.8, 0.9, 0.7], [0.6, 0.7, 0.5]).sample(frac=1.0, random_state=1)
    r = judge(CLAIM, df)
    assert r.effect == pytest.approx(0.2) and r.ci_low == pytest.approx(0.2)  # identical paired gains
    assert r.verdict == "reproduced" and r.n_seeds == 3


def test_reproduced_not_reproduced_inconclusive():
    assert judge(CLAIM, runs([0.80, 0.82, 0.81, 0.83], [0.70, 0.71, 0.69, 0.72])).verdict == "reproduced"
    assert judge(CLAIM, runs([0.60, 0.61, 0.59, 0.62], [0.70, 0.71, 0.69, 0.72])).verdict == "not_reproduced"
    noisy = judge(CLAIM, runs([0.75, 0.65, 0.80, 0.66], [0.70, 0.71, 0.69, 0.72]))
    assert noisy.ci_low < 0 < noisy.ci_high and noisy.verdict == "inconclusive"


def test_threshold_must_be_cleared():
    far = Claim(**{**CLAIM.__dict__, "threshold": 0.05})
    small_gain = runs([0.72, 0.73, 0.72, 0.73], [0.70, 0.71, 0.70, 0.71])  # +0.02, tight
    r = judge(far, small_gain)
    assert r.ci_low > 0 and r.verdict == "not_reproduced"  # significant, but below the declared threshold


def test_lower_is_better_flips_the_sign():
    loss = Claim(**{**CLAIM.__dict__, "metric": "loss", "higher_is_better": False})
    df = runs([0.1, 0.12, 0.11], [0.3, 0.31, 0.29]).rename(columns={"acc": "loss"})
    assert judge(loss, df).effect > 0 and judge(loss, df).verdict == "reproduced"


def test_non_inferiority():
    kept = Claim(**{**CLAIM.__dict__, "kind": "non_inferiority", "threshold": -0.02})
    assert decide(kept, -0.005, -0.01, 0.0) == "reproduced"
    assert decide(kept, -0.05, -0.06, -0.04) == "not_reproduced"
    assert decide(kept, -0.02, -0.04, 0.0) == "inconclusive"


def test_one_seed_is_inconclusive_and_baseline_metric_is_used():
    assert judge_effects(CLAIM, np.array([0.3])).verdict == "inconclusive"
    oracle = Claim(**{**CLAIM.__dict__, "baseline_metric": "best"})
    df = runs([0.8, 0.8], [0.6, 0.6]).assign(best=[0.0, 0.0, 0.9, 0.9])
    assert judge(oracle, df).effect == pytest.approx(-0.1)


def test_missing_arm_or_metric_fails_clearly():
    with pytest.raises(KeyError, match="no runs of arm 'new'"):
        judge(CLAIM, runs([], [0.5]))
    with pytest.raises(KeyError, match="no metric"):
        judge(Claim(**{**CLAIM.__dict__, "metric": "nope"}), runs([0.5], [0.5]))
    with pytest.raises(ValueError, match="non-finite"):
        judge_effects(CLAIM, np.array([0.1, math.nan]))
