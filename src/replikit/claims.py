"""Claims from papers and the one judge that gives them verdicts.

A :class:`Claim` is data, declared in the method module's ``CLAIMS`` before the final runs: the quote,
the metric, how the per-seed effect is formed, and the **smallest effect of interest** ``delta`` (> 0)
with its reason. :func:`judge` turns a runs table (one row per arm and seed) into a :class:`ClaimResult`;
:func:`judge_all` does it for a method's whole list and is the only judge in the suite.

How the per-seed effect is formed (oriented so that a positive effect supports the claim):

- paired two-arm (``treatment`` vs ``baseline``): treatment - baseline seed by seed, sign-flipped when
  lower is better; ``baseline_metric`` compares against another column of the baseline (e.g. its best
  epoch); ``relative=True`` divides each seed's difference by the baseline's absolute value;
- single arm against a constant (``baseline=None``, ``constant=c``): treatment - c;
- derived (``statistic=f``): ``f(runs)`` returns one effect per seed (a difference of differences, a
  trend statistic); the function lives in the method module, beside the claim; ``arms`` names the arms it reads (glob
  patterns), so that later sequential looks can train those alone;
- conditional: a claim whose arms or metrics did not run with the current parameters is ``skipped``
  with the reason, never silently dropped.

The decision, on the mean effect and its two-sided t-interval at level 1 - alpha:

- superiority ("A beats B"):
    reproduced      the interval excludes 0 on the claimed side (low > 0) and the mean is >= delta;
    not_reproduced  the whole interval lies below delta (high < delta);
    inconclusive    otherwise.
- non-inferiority ("A does not hurt B by more than delta"):
    reproduced      low > -delta;   not_reproduced  high < -delta;   inconclusive  otherwise.

So a true effect of zero is decidable: with enough seeds the interval shrinks below delta and the claim
reads ``not_reproduced`` (an effect of exactly 0 +- 0 does so at once). Sequential looks (more seeds while
undecided) are :mod:`replikit.sequential`'s business; it passes each look's alpha here.

``margin`` measures how far a verdict is from flipping: the distance, in interval half-widths, from the
interval's deciding bound to the decision boundary (positive: decided with that much room; negative: how
far an inconclusive claim is from the nearer decision).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
import pandas as pd
from scipy import stats

Verdict = Literal["reproduced", "not_reproduced", "inconclusive", "skipped"]
DECIDED = ("reproduced", "not_reproduced")


@dataclass(frozen=True)
class Claim:
    id: str
    paper: str
    quote: str
    metric: str
    treatment: str
    baseline: str | None = None
    delta: float | None = None  # smallest effect of interest (> 0); the tolerated loss for non-inferiority
    delta_reason: str = ""
    kind: Literal["superiority", "non_inferiority"] = "superiority"
    higher_is_better: bool = True
    baseline_metric: str | None = None  # compare against another column of the baseline (e.g. its best epoch)
    constant: float | None = None  # single-arm claims: the treatment against this value
    relative: bool = False  # effect relative to the baseline's magnitude, seed by seed
    statistic: Callable[[pd.DataFrame], pd.Series] | None = field(default=None, compare=False)
    arms: tuple[str, ...] = ()  # derived claims: glob patterns of the arms ``statistic`` reads (() = all)
    quote_kind: Literal["verbatim", "paraphrase"] = "verbatim"
    paper_value: dict[str, float] = field(default_factory=dict)
    paper_source: str = ""  # the table or figure, and the row, that paper_value comes from
    note: str = ""
    threshold: float | None = None  # deprecated: read as delta until every method declares delta

    @property
    def smallest_effect(self) -> float:
        d = self.delta if self.delta is not None else self.threshold
        if d is None:
            raise ValueError(f"{self.id}: declares no delta (the smallest effect of interest)")
        return abs(d)

    @property
    def arm_patterns(self) -> tuple[str, ...]:
        """The arms this claim reads, as glob patterns: what a later sequential look must train for it."""
        if self.statistic is not None:
            return self.arms or ("*",)
        return (self.treatment,) if self.baseline is None else (self.treatment, self.baseline)

    @property
    def comparison(self) -> str:
        if self.statistic is not None:
            return f"{self.statistic.__name__} per seed"
        against = self.baseline if self.baseline is not None else f"{self.constant:g}"
        return f"{self.treatment} vs {against}"


@dataclass
class ClaimResult:
    claim: Claim
    verdict: Verdict
    effect: float = math.nan
    ci_low: float = math.nan
    ci_high: float = math.nan
    n_seeds: int = 0
    treatment_mean: float = math.nan
    baseline_mean: float = math.nan
    alpha: float = 0.05
    reason: str = ""  # why a claim was skipped
    stop: str = ""  # sequential seeds: why it stopped (filled by replikit.sequential)
    looks: int = 1
    seed_role: str = ""

    @property
    def decided(self) -> bool:
        return self.verdict in DECIDED

    @property
    def margin(self) -> float:
        return flip_margin(self.claim, self.effect, self.ci_low, self.ci_high)

    def to_json(self) -> dict[str, Any]:
        c = self.claim
        out = {
            "id": c.id,
            "paper": c.paper,
            "quote": c.quote,
            "quote_kind": c.quote_kind,
            "metric": c.metric,
            "baseline": c.baseline,
            "treatment": c.treatment,
            "comparison": c.comparison,
            "baseline_metric": c.baseline_metric or c.metric,
            "kind": c.kind,
            "higher_is_better": c.higher_is_better,
            "relative": c.relative,
            "effect": _num(self.effect),
            "ci_low": _num(self.ci_low),
            "ci_high": _num(self.ci_high),
            "ci_level": round(1 - self.alpha, 6),
            "n_seeds": self.n_seeds,
            "looks": self.looks,
            "stop": self.stop,
            "seed_role": self.seed_role,
            "treatment_mean": _num(self.treatment_mean),
            "baseline_mean": _num(self.baseline_mean),
            "delta": c.smallest_effect,
            "delta_reason": c.delta_reason,
            "margin": _num(self.margin),
            "paper_value": c.paper_value,
            "paper_source": c.paper_source,
            "note": c.note,
            "verdict": self.verdict,
        }
        if self.verdict == "skipped":
            out["reason"] = self.reason
        return out


def _num(x: float) -> float | None:
    return None if x is None or not math.isfinite(x) else round(float(x), 6)


# ------------------------------------------------------------------ statistics


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
    """The verdict from the mean effect and its interval (module docstring)."""
    if not (math.isfinite(low) and math.isfinite(high)):
        return "inconclusive"
    delta = claim.smallest_effect
    if claim.kind == "non_inferiority":
        if low > -delta:
            return "reproduced"
        return "not_reproduced" if high < -delta else "inconclusive"
    if low > 0 and mean >= delta:
        return "reproduced"
    if high < delta:
        return "not_reproduced"
    return "inconclusive"


def flip_margin(claim: Claim, mean: float, low: float, high: float) -> float:
    """Distance from the deciding bound to the decision boundary, in half-widths (module docstring)."""
    if not all(math.isfinite(v) for v in (mean, low, high)):
        return math.nan
    half = (high - low) / 2
    delta = claim.smallest_effect
    if claim.kind == "non_inferiority":
        gaps = {"reproduced": low + delta, "not_reproduced": -delta - high}
    else:
        gaps = {"reproduced": min(low, mean - delta), "not_reproduced": delta - high}
    verdict = decide(claim, mean, low, high)
    if half == 0:
        return math.inf if verdict in DECIDED else -math.inf
    if verdict in gaps:
        return gaps[verdict] / half
    return max(gaps.values()) / half  # negative: how far from the nearer decision


# ------------------------------------------------------------------ the judge


def judge_effects(
    claim: Claim, effects, treatment_mean=math.nan, baseline_mean=math.nan, alpha=0.05
) -> ClaimResult:
    """Judge a claim from per-seed effects already oriented so that positive supports the claim."""
    effects = np.asarray(effects, dtype=float)
    if not np.all(np.isfinite(effects)):
        raise ValueError(f"{claim.id}: non-finite effects {effects}")
    mean, low, high = mean_ci(effects, 1 - alpha)
    verdict = decide(claim, mean, low, high)
    return ClaimResult(claim, verdict, mean, low, high, effects.size, treatment_mean, baseline_mean, alpha)


def skipped(claim: Claim, reason: str) -> ClaimResult:
    return ClaimResult(claim, "skipped", reason=reason)


def _missing(claim: Claim, runs: pd.DataFrame) -> str:
    """Why ``claim`` cannot be judged on ``runs`` ('' when it can)."""
    arms = set(runs["arm"]) if "arm" in runs else set()
    if claim.statistic is not None:
        return ""
    needs = [(claim.treatment, claim.metric)]
    if claim.baseline is not None:
        needs.append((claim.baseline, claim.baseline_metric or claim.metric))
    for arm, col in needs:
        if arm not in arms:
            return f"arm {arm!r} did not run with these parameters (arms run: {', '.join(sorted(map(str, arms)))})"
        if col not in runs or runs.loc[runs["arm"] == arm, col].isna().all():
            return f"metric {col!r} was not measured for arm {arm!r} with these parameters"
    return ""


def paired_effects(claim: Claim, runs: pd.DataFrame) -> tuple[pd.Series, float, float]:
    """Per-seed effects of a two-arm or single-arm claim, oriented; and the arms' means."""
    t = runs[runs["arm"] == claim.treatment].set_index("seed")[claim.metric].dropna()
    if claim.baseline is None:
        if claim.constant is None:
            raise ValueError(f"{claim.id}: a single-arm claim needs a constant")
        diff = t - claim.constant
        b_mean = claim.constant
    else:
        b = (
            runs[runs["arm"] == claim.baseline]
            .set_index("seed")[claim.baseline_metric or claim.metric]
            .dropna()
        )
        seeds = t.index.intersection(b.index)
        if len(seeds) == 0:
            raise ValueError(f"{claim.id}: treatment and baseline share no seed")
        t, b = t.loc[seeds], b.loc[seeds]
        diff = t - b
        if claim.relative:
            diff = diff / b.abs()
        b_mean = float(b.mean())
    if not claim.higher_is_better:
        diff = -diff
    return diff, float(t.mean()), b_mean


def judge(claim: Claim, runs: pd.DataFrame, alpha: float = 0.05) -> ClaimResult:
    """Judge ``claim`` on ``runs`` (one row per (arm, seed), columns ``arm``, ``seed`` and metrics)."""
    reason = _missing(claim, runs)
    if reason:
        return skipped(claim, reason)
    if claim.statistic is not None:
        effects = claim.statistic(runs)
        if effects is None or len(effects) == 0:
            return skipped(claim, f"{claim.statistic.__name__} has nothing to measure with these parameters")
        return judge_effects(claim, np.asarray(effects, dtype=float), alpha=alpha)
    diff, t_mean, b_mean = paired_effects(claim, runs)
    return judge_effects(claim, diff.to_numpy(), t_mean, b_mean, alpha)


def judge_all(claims: list[Claim], runs: pd.DataFrame, alpha: float = 0.05) -> list[ClaimResult]:
    """Every claim of a method, in order: the one judge of the suite."""
    return [judge(c, runs, alpha) for c in claims]


def table(results: list[ClaimResult]) -> pd.DataFrame:
    """One row per claim: ours as mean [CI] (n), the paper's figures, the verdict."""
    rows = []
    for r in results:
        c = r.claim
        paper = ", ".join(f"{k} {v:g}" for k, v in c.paper_value.items()) or "-"
        ours = (
            f"{r.effect:+.4f} [{r.ci_low:+.4f}, {r.ci_high:+.4f}] ({1 - r.alpha:.1%} CI, n={r.n_seeds})"
            if r.verdict != "skipped"
            else "-"
        )
        rows.append(
            {
                "claim": c.id,
                "comparison": f"{c.comparison} on {c.metric}",
                "effect [CI] (n)": ours,
                "delta": f"{c.kind[:3]} {c.smallest_effect:g}",
                "paper": paper,
                "verdict": r.verdict if r.verdict != "skipped" else f"skipped: {r.reason}",
                "stop": r.stop,
            }
        )
    return pd.DataFrame(rows).set_index("claim")
