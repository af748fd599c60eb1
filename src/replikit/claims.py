"""Claims from papers and the verdicts our runs give them.

A :class:`Claim` is declared in the method module before anything runs: the quote, the metric, which
arm is the treatment and which the baseline, the threshold the effect must clear and the paper's own
numbers. :func:`judge` pairs treatment and baseline by seed, takes the per-seed effect
(treatment - baseline, sign-flipped for "less is better" metrics), its mean and a two-sided 95%
t-interval over seeds, and decides:

- superiority claims ("A beats B"):
  reproduced      the mean effect is beyond the threshold and the interval excludes 0;
  not_reproduced  the whole interval lies on the wrong side of the threshold;
  inconclusive    anything else (the interval straddles the threshold, or too few seeds).
- non-inferiority claims ("A does not hurt B", threshold = the tolerated loss, e.g. -0.02):
  reproduced      the whole interval lies above the threshold;
  not_reproduced  the whole interval lies below it;
  inconclusive    otherwise.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
import pandas as pd
from scipy import stats

Verdict = Literal["reproduced", "not_reproduced", "inconclusive"]


@dataclass(frozen=True)
class Claim:
    id: str
    paper: str
    quote: str
    metric: str
    treatment: str
    baseline: str
    threshold: float = 0.0
    higher_is_better: bool = True
    kind: Literal["superiority", "non_inferiority"] = "superiority"
    baseline_metric: str | None = None  # compare against another column of the baseline (e.g. its best epoch)
    paper_value: dict[str, float] = field(default_factory=dict)
    note: str = ""


@dataclass
class ClaimResult:
    claim: Claim
    effect: float
    ci_low: float
    ci_high: float
    n_seeds: int
    treatment_mean: float
    baseline_mean: float
    verdict: Verdict

    def to_json(self) -> dict[str, Any]:
        c = self.claim
        return {
            "id": c.id,
            "paper": c.paper,
            "quote": c.quote,
            "metric": c.metric,
            "baseline": c.baseline,
            "treatment": c.treatment,
            "baseline_metric": c.baseline_metric or c.metric,
            "kind": c.kind,
            "higher_is_better": c.higher_is_better,
            "effect": _num(self.effect),
            "ci_low": _num(self.ci_low),
            "ci_high": _num(self.ci_high),
            "n_seeds": self.n_seeds,
            "treatment_mean": _num(self.treatment_mean),
            "baseline_mean": _num(self.baseline_mean),
            "threshold": c.threshold,
            "paper_value": c.paper_value,
            "note": c.note,
            "verdict": self.verdict,
        }


def _num(x: float) -> float | None:
    return None if x is None or not math.isfinite(x) else round(float(x), 6)


def mean_ci(samples: np.ndarray, level: float = 0.95) -> tuple[float, float, float]:
    """Mean and two-sided t-interval; (mean, nan, nan) with fewer than two samples."""
    samples = np.asarray(samples, dtype=float)
    mean = float(samples.mean()) if samples.size else math.nan
    if samples.size < 2:
        return mean, math.nan, math.nan
    sem = float(samples.std(ddof=1)) / math.sqrt(samples.size)
    if sem == 0.0:
        return mean, mean, mean
    half = float(stats.t.ppf(0.5 + level / 2, df=samples.size - 1)) * sem
    return mean, mean - half, mean + half


def decide(claim: Claim, mean: float, low: float, high: float) -> Verdict:
    if not (math.isfinite(low) and math.isfinite(high)):
        return "inconclusive"
    th = claim.threshold
    if claim.kind == "non_inferiority":
        if low > th:
            return "reproduced"
        return "not_reproduced" if high < th else "inconclusive"
    if mean > th and low > 0:  # beyond the threshold, and the interval excludes 0
        return "reproduced"
    if high < th:
        return "not_reproduced"
    return "inconclusive"


def judge_effects(claim: Claim, effects: np.ndarray, treatment_mean=math.nan, baseline_mean=math.nan) -> ClaimResult:
    """Judge a claim from per-seed effects already oriented so that positive supports the claim."""
    effects = np.asarray(effects, dtype=float)
    if not np.all(np.isfinite(effects)):
        raise ValueError(f"{claim.id}: non-finite effects {effects}")
    mean, low, high = mean_ci(effects)
    return ClaimResult(claim, mean, low, high, effects.size, treatment_mean, baseline_mean, decide(claim, mean, low, high))


def judge(claim: Claim, runs: pd.DataFrame) -> ClaimResult:
    """Judge ``claim`` on ``runs``: one row per (arm, seed) with columns ``arm``, ``seed`` and metrics."""
    base_metric = claim.baseline_metric or claim.metric
    for arm, col in ((claim.treatment, claim.metric), (claim.baseline, base_metric)):
        if arm not in set(runs["arm"]):
            raise KeyError(f"{claim.id}: no runs of arm {arm!r} (arms: {sorted(set(runs['arm']))})")
        if col not in runs:
            raise KeyError(f"{claim.id}: no metric {col!r} in runs (columns: {list(runs.columns)})")
    t = runs[runs["arm"] == claim.treatment].set_index("seed")[claim.metric]
    b = runs[runs["arm"] == claim.baseline].set_index("seed")[base_metric]
    seeds = t.index.intersection(b.index)
    if len(seeds) == 0:
        raise ValueError(f"{claim.id}: treatment and baseline share no seed")
    diff = (t.loc[seeds] - b.loc[seeds]).to_numpy()
    if not claim.higher_is_better:
        diff = -diff
    return judge_effects(claim, diff, float(t.loc[seeds].mean()), float(b.loc[seeds].mean()))


def judge_all(claims: list[Claim], runs: pd.DataFrame) -> list[ClaimResult]:
    return [judge(c, runs) for c in claims]


def table(results: list[ClaimResult]) -> pd.DataFrame:
    """One row per claim: ours as mean [CI] (n), the paper's figures, the verdict."""
    rows = []
    for r in results:
        c = r.claim
        paper = ", ".join(f"{k} {v:g}" for k, v in c.paper_value.items()) or "-"
        rows.append(
            {
                "claim": c.id,
                "metric": c.metric if not c.baseline_metric else f"{c.metric} vs {c.baseline_metric}",
                "comparison": f"{c.treatment} vs {c.baseline}",
                "effect [95% CI] (n)": f"{r.effect:+.4f} [{r.ci_low:+.4f}, {r.ci_high:+.4f}] (n={r.n_seeds})",
                "means": f"{r.treatment_mean:.4f} vs {r.baseline_mean:.4f}",
                "threshold": c.threshold,
                "paper": paper,
                "verdict": r.verdict,
            }
        )
    return pd.DataFrame(rows).set_index("claim")

